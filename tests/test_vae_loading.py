"""load_vae: ComfyUI safetensors and official .pth files, prefixes, dtypes, and checkpoint mismatches."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from helpers_vae import TINY, random_vae, random_video
from wan_animate.loading.vae import load_vae


@pytest.fixture(scope="module")
def source():
    vae = random_vae(TINY, seed=11)
    video = random_video(5, 16, 16, seed=12)
    return vae, video, vae.encode(video)


def _save(state: dict[str, torch.Tensor], folder, name: str) -> str:
    path = str(folder / name)
    state = {k: v.contiguous() for k, v in state.items()}
    if name.endswith(".pth"):
        torch.save(state, path)
    else:
        save_file(state, path)
    return path


@pytest.mark.parametrize(
    ("name", "prefix"),
    [("wan_2.1_vae.safetensors", ""), ("Wan2.1_VAE.pth", ""), ("prefixed.safetensors", "first_stage_model."),
     ("vae_prefixed.safetensors", "vae.")],
)
def test_round_trip_float32_is_exact(source, tmp_path, name, prefix):
    vae, video, latent = source
    path = _save({prefix + k: v for k, v in vae.state_dict().items()}, tmp_path, name)
    loaded = load_vae(path)
    assert loaded.config == TINY and not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    for key, value in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded.encode(video), latent)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_round_trip_half_precision(source, tmp_path, dtype):
    vae, video, latent = source
    path = _save(vae.state_dict(), tmp_path, "vae.safetensors")
    loaded = load_vae(path, dtype=dtype)
    assert loaded.dtype == dtype
    for key, value in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.to(dtype)), key
    half = loaded.encode(video)
    assert half.dtype == torch.float32 and half.shape == latent.shape
    # half-precision activations through ~20 layers (measured: encode 2e-3 bf16 / 3e-4 fp16 of a 0.86 range,
    # decode 0.037 bf16 / 0.005 fp16)
    assert (half - latent).abs().max().item() < 0.02 * latent.abs().max().item()
    recon = loaded.decode(latent)
    assert recon.shape == (1, 3, 5, 16, 16) and (recon - vae.decode(latent)).abs().max().item() < 0.1


def test_missing_unexpected_and_wrong_shape_keys_are_named(source, tmp_path):
    vae, _, _ = source
    state = dict(vae.state_dict())
    del state["decoder.head.2.bias"]
    state["decoder.extra.weight"] = torch.zeros(2)
    state["decoder.head.0.gamma"] = torch.ones(5, 1, 1, 1)
    path = _save(state, tmp_path, "broken.safetensors")
    with pytest.raises(ValueError) as info:
        load_vae(path)
    message = str(info.value)
    assert "missing keys: decoder.head.2.bias" in message
    assert "unexpected keys: decoder.extra.weight" in message
    assert "decoder.head.0.gamma: checkpoint (5, 1, 1, 1) vs model (8, 1, 1, 1)" in message


def test_wan22_vae_is_recognised(tmp_path):
    state = {
        "encoder.conv1.weight": torch.zeros(160, 12, 3, 3, 3),
        "conv2.weight": torch.zeros(48, 48, 1, 1, 1),
        "decoder.upsamples.0.upsamples.0.residual.2.weight": torch.zeros(4),
    }
    path = _save(state, tmp_path, "wan2.2_vae.safetensors")
    with pytest.raises(ValueError, match="Wan2.2 TI2V VAE .* not the Wan2.1 VAE"):
        load_vae(path)


def test_other_checkpoints_are_rejected(tmp_path):
    path = _save({"blocks.0.self_attn.q.weight": torch.zeros(2, 2)}, tmp_path, "dit.safetensors")
    with pytest.raises(ValueError, match="not a Wan VAE checkpoint .*encoder.conv1.weight"):
        load_vae(path)


def test_unsupported_dtype_is_rejected(source, tmp_path):
    path = _save(source[0].state_dict(), tmp_path, "vae.safetensors")
    with pytest.raises(ValueError, match="VAE dtype must be one of"):
        load_vae(path, dtype=torch.float64)
