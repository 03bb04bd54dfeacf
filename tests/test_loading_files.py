"""Checkpoint files as users have them: legacy (non-zip) torch.save files, a shard picked without its index, .sft
safetensors, and the loader pickers listing only what the loaders read."""
from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from helpers_dit import build_tiny_dit, run_dit, tiny_inputs
from wan_animate.loading.dit import load_dit
from wan_animate.loading.state_dict import checkpoint_key_names, load_state_dict


class NotATensor:
    """An object a weights_only load must refuse to build."""


def _state() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(12.0).reshape(3, 4), "a.bias": torch.tensor([1.0, -2.0, 3.0])}


@pytest.mark.parametrize("suffix", [".pth", ".ckpt"])
def test_legacy_torch_save_file_loads_without_mmap(tmp_path, suffix):
    path = tmp_path / f"legacy{suffix}"
    torch.save(_state(), path, _use_new_zipfile_serialization=False)
    loaded = load_state_dict(str(path))
    assert set(loaded) == set(_state()) and all(torch.equal(loaded[k], v) for k, v in _state().items())


def test_legacy_file_is_still_read_weights_only(tmp_path):
    path = tmp_path / "legacy_object.pth"
    torch.save({"a.weight": torch.zeros(2), "evil": NotATensor()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="could not be read") as error:
        load_state_dict(str(path))
    assert isinstance(error.value.__cause__, pickle.UnpicklingError)


def test_truncated_legacy_file_is_called_damaged(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(_state(), path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.pth could not be read"):
        load_state_dict(str(path))


def test_zip_torch_file_still_loads(tmp_path):
    path = tmp_path / "zip.pt"
    torch.save(_state(), path)
    assert torch.equal(load_state_dict(str(path))["a.weight"], _state()["a.weight"])


def test_sft_files_load_as_safetensors(tmp_path):
    path = tmp_path / "weights.sft"
    save_file(_state(), str(path))
    assert torch.equal(load_state_dict(str(path))["a.bias"], _state()["a.bias"])
    assert sorted(checkpoint_key_names(str(path))) == ["a.bias", "a.weight"]
    model = build_tiny_dit(seed=0)
    dit_path = tmp_path / "dit.sft"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dit_path))
    inputs = tiny_inputs()
    assert torch.equal(run_dit(load_dit(str(dit_path), dtype=torch.float32), inputs), run_dit(model, inputs))


def test_shard_without_its_index_names_the_missing_index(tmp_path):
    state = {k: v.contiguous() for k, v in build_tiny_dit(seed=0).state_dict().items()}
    keys = sorted(state)
    for i in range(2):
        save_file({k: state[k] for k in keys[i::2]},
                  str(tmp_path / f"diffusion_pytorch_model-{i + 1:05d}-of-00002.safetensors"))
    with pytest.raises(FileNotFoundError) as error:
        load_dit(str(tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors"))
    message = str(error.value)
    assert "'diffusion_pytorch_model.safetensors.index.json' is missing" in message
    assert "shard 2 of 2" in message


def test_pickers_list_only_loadable_files(pack, tmp_path, monkeypatch):
    monkeypatch.setenv("WAN_ANIMATE_MODELS_DIR", str(tmp_path))
    for folder in ("diffusion_models", "vae", "loras"):
        (tmp_path / folder).mkdir()
        for name in ("a.safetensors", "b.sft", "c.pth", "d.ckpt", "e.pt2", "f.pkl", "readme.txt"):
            (tmp_path / folder / name).write_bytes(b"")
    listed = {
        "diffusion_models": pack.NODE_CLASS_MAPPINGS["WanAnimateModelLoader"].INPUT_TYPES()["required"]["model_name"],
        "vae": pack.NODE_CLASS_MAPPINGS["WanAnimateVAELoader"].INPUT_TYPES()["required"]["vae_name"],
        "loras": pack.NODE_CLASS_MAPPINGS["WanAnimateLoraLoader"].INPUT_TYPES()["required"]["lora_name"],
    }
    for folder, (files, _) in listed.items():
        assert files == ["a.safetensors", "b.sft", "c.pth", "d.ckpt"], folder
