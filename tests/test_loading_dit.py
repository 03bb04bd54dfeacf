"""load_dit through every checkpoint layout and dtype, config inference, fp8 storage, and key-mismatch errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers_dit import build_tiny_dit, run_dit, tiny_config, tiny_inputs
from wan_animate.loading.dit import infer_config, load_dit
from wan_animate.runtime.fp8 import FP8Linear, dequantize, quantize

FP8 = torch.float8_e4m3fn


@pytest.fixture(scope="module")
def model():
    return build_tiny_dit(seed=0)


@pytest.fixture(scope="module")
def inputs():
    return tiny_inputs(mode="replace")


@pytest.fixture(scope="module")
def reference_out(model, inputs):
    return run_dit(model, inputs)


def _state(model, dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}


def _block_linear_weights(model) -> list[str]:
    return [f"{name}.weight" for name, m in model.named_modules()
            if type(m) is torch.nn.Linear and name.startswith(("blocks.", "face_adapter."))]


def _save_shards(state: dict, folder: Path, shards: int = 3) -> Path:
    """The official release's layout: diffusion_pytorch_model-0000N-of-0000M.safetensors + index json."""
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: state[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def _rounded_model(model, dtype):
    """The float32 model whose weights went through `dtype` (what a `dtype` file holds)."""
    rounded = build_tiny_dit(seed=0)
    rounded.load_state_dict({k: v.to(dtype).float() for k, v in model.state_dict().items()})
    return rounded


# ----- layouts and dtypes -----

@pytest.mark.parametrize("layout", ["official_shards", "index_path", "one_shard_path", "comfy_prefix",
                                    "diffusion_model_prefix", "single_file"])
def test_layouts_load_to_identical_outputs(model, inputs, reference_out, tmp_path, layout):
    state = _state(model)  # weights are bf16-representable: exact
    if layout in ("official_shards", "index_path", "one_shard_path"):
        index = _save_shards(state, tmp_path)
        path = {"official_shards": str(tmp_path), "index_path": str(index),
                "one_shard_path": str(tmp_path / "diffusion_pytorch_model-00002-of-00003.safetensors")}[layout]
    else:
        prefix = {"comfy_prefix": "model.diffusion_model.", "diffusion_model_prefix": "diffusion_model.",
                  "single_file": ""}[layout]
        path = str(tmp_path / "dit.safetensors")
        save_file({prefix + k: v for k, v in state.items()}, path)
    loaded = load_dit(path, dtype=torch.float32)
    assert loaded.config == model.config
    assert torch.equal(run_dit(loaded, inputs), reference_out)


@pytest.mark.parametrize("file_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_file_dtypes_load_exactly(model, inputs, tmp_path, file_dtype):
    path = str(tmp_path / "dit.safetensors")
    save_file(_state(model, file_dtype), path)
    loaded = load_dit(path, dtype=torch.float32)
    assert torch.equal(run_dit(loaded, inputs), run_dit(_rounded_model(model, file_dtype), inputs))


def test_bf16_compute_dtype_and_no_meta_tensors(model, tmp_path):
    path = str(tmp_path / "dit.safetensors")
    save_file(_state(model, torch.float32), path)
    loaded = load_dit(path, dtype=torch.bfloat16)
    tensors = list(loaded.parameters()) + list(loaded.buffers())
    assert all(not t.is_meta and t.device.type == "cpu" for t in tensors)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in loaded.parameters())
    assert torch.equal(loaded.blocks[3].ffn[0].weight, model.blocks[3].ffn[0].weight.to(torch.bfloat16))


def test_missing_blur_kernels_are_rebuilt(model, inputs, reference_out, tmp_path):
    path = str(tmp_path / "dit.safetensors")
    save_file({k: v for k, v in _state(model).items() if not k.endswith(".kernel")}, path)
    assert torch.equal(run_dit(load_dit(path, dtype=torch.float32), inputs), reference_out)


# ----- fp8 -----

def _fp8_reference(model, weights: dict[str, tuple[torch.Tensor, torch.Tensor | None]]):
    """The float32 model whose named weights are the dequantised fp8 values."""
    rounded = build_tiny_dit(seed=0)
    state = rounded.state_dict()
    for key, (w8, scale) in weights.items():
        state[key] = dequantize(w8, scale, torch.float32)
    rounded.load_state_dict(state)
    return rounded


def test_plain_fp8_file_keeps_fp8_and_matches_rounded_model(model, inputs, tmp_path):
    state = _state(model)
    quantised = {k: (state[k].to(FP8), None) for k in _block_linear_weights(model)}
    state.update({k: w8 for k, (w8, _) in quantised.items()})
    path = str(tmp_path / "dit_fp8_e4m3fn.safetensors")
    save_file({"model.diffusion_model." + k: v for k, v in state.items()}, path)
    loaded = load_dit(path, dtype=torch.float32)
    layer = loaded.blocks[0].self_attn.q
    assert isinstance(layer, FP8Linear) and layer.weight.dtype == FP8 and layer.scale_weight.item() == 1.0
    assert not isinstance(loaded.head.head, FP8Linear)
    assert torch.equal(run_dit(loaded, inputs), run_dit(_fp8_reference(model, quantised), inputs))
    dequantised = load_dit(path, dtype=torch.float32, storage_dtype=torch.float32)
    assert not any(isinstance(m, FP8Linear) for m in dequantised.modules())
    assert torch.equal(run_dit(dequantised, inputs), run_dit(loaded, inputs))


@pytest.mark.parametrize("convention", ["scaled_fp8_marker", "comfy_quant"])
def test_scaled_fp8_files_match_rounded_model(model, inputs, tmp_path, convention):
    state = _state(model)
    quantised = {k: quantize(state[k]) for k in _block_linear_weights(model)}
    quantised["text_embedding.0.weight"] = quantize(state["text_embedding.0.weight"])  # a non-block fp8 Linear
    quantised["patch_embedding.weight"] = quantize(state["patch_embedding.weight"])  # fp8 conv: dequantised on load
    for key, (w8, scale) in quantised.items():
        layer = key[: -len(".weight")]
        state[key] = w8
        if convention == "scaled_fp8_marker":
            state[f"{layer}.scale_weight"] = scale.reshape(1)
            state[f"{layer}.scale_input"] = torch.ones(1)
        else:
            state[f"{layer}.weight_scale"] = scale
            state[f"{layer}.comfy_quant"] = torch.tensor(list(b'{"format": "float8_e4m3fn"}'), dtype=torch.uint8)
    if convention == "scaled_fp8_marker":
        state["scaled_fp8"] = torch.zeros(2, dtype=FP8)
    path = str(tmp_path / "dit_fp8_scaled.safetensors")
    save_file(state, path)
    loaded = load_dit(path, dtype=torch.float32)
    assert isinstance(loaded.text_embedding[0], FP8Linear) and isinstance(loaded.blocks[5].ffn[2], FP8Linear)
    assert loaded.patch_embedding.weight.dtype == torch.float32
    assert torch.equal(loaded.blocks[5].ffn[2].scale_weight, quantised["blocks.5.ffn.2.weight"][1].reshape(()))
    assert torch.equal(run_dit(loaded, inputs), run_dit(_fp8_reference(model, quantised), inputs))


def test_storage_fp8_quantises_a_bf16_file(model, inputs, reference_out, tmp_path):
    path = str(tmp_path / "dit.safetensors")
    save_file(_state(model), path)
    loaded = load_dit(path, dtype=torch.float32, storage_dtype=FP8)
    names = _block_linear_weights(model)
    fp8_layers = {n for n, m in loaded.named_modules() if isinstance(m, FP8Linear)}
    assert fp8_layers == {n[: -len(".weight")] for n in names}
    quantised = {k: quantize(model.state_dict()[k]) for k in names}
    assert torch.equal(run_dit(loaded, inputs), run_dit(_fp8_reference(model, quantised), inputs))
    assert (run_dit(loaded, inputs) - reference_out).abs().max() < 0.1 * reference_out.abs().max()
    assert set(loaded.state_dict()) == set(model.state_dict())


def test_fp8_linear_weight_roundtrip_for_lora_merging():
    layer = FP8Linear(8, 4)
    layer.set_weight(torch.linspace(-2, 2, 32).reshape(4, 8))
    merged = layer.dequantized_weight(torch.float32) + 0.25
    layer.set_weight(merged)
    assert layer.weight.dtype == FP8
    err = (layer.dequantized_weight(torch.float32) - merged).abs().max()
    assert 0 < err <= merged.abs().max() / 16  # within e4m3 rounding (3 mantissa bits)
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), x @ layer.dequantized_weight(torch.float32).T + layer.bias, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        layer.set_weight(torch.zeros(8, 4))


def test_module_dtype_casts_keep_fp8_storage():
    layer = FP8Linear(8, 4)
    layer.set_weight(torch.linspace(-2, 2, 32).reshape(4, 8))
    weight, scale = layer.weight.clone(), layer.scale_weight.clone()
    layer.to(torch.bfloat16)
    assert layer.weight.dtype == FP8 and torch.equal(layer.weight.view(torch.uint8), weight.view(torch.uint8))
    assert layer.scale_weight.dtype == torch.float32 and torch.equal(layer.scale_weight, scale)
    assert layer.bias.dtype == torch.bfloat16
    assert layer(torch.randn(2, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


# ----- config inference and errors -----

def test_infer_config_from_shapes_only(model):
    shapes = {"model.diffusion_model." + k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert infer_config(shapes) == model.config
    other = tiny_config(num_layers=10, num_heads=4, motion_channels=(4, 8, 8, 8))
    with torch.device("meta"):
        from wan_animate.model.dit import WanAnimateDiT

        assert infer_config(WanAnimateDiT(other).state_dict()) == other


def test_infer_config_of_the_released_14b_layout():
    from wan_animate.model.dit import WanAnimateConfig, WanAnimateDiT

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in WanAnimateDiT(WanAnimateConfig()).state_dict().items()}
    config = infer_config(shapes)
    assert config == WanAnimateConfig()
    assert (config.dim, config.num_heads, config.num_layers, config.num_face_blocks) == (5120, 40, 40, 8)


def _save(state, tmp_path) -> str:
    path = str(tmp_path / "dit.safetensors")
    save_file(state, path)
    return path


def test_missing_key_is_named(model, tmp_path):
    state = _state(model)
    del state["blocks.2.cross_attn.k_img.weight"]
    with pytest.raises(ValueError, match=r"missing 1 keys: blocks\.2\.cross_attn\.k_img\.weight \[32, 32\]"):
        load_dit(_save(state, tmp_path))


def test_unexpected_key_is_named(model, tmp_path):
    state = _state(model)
    state["blocks.1.extra.weight"] = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"unexpected 1 keys: blocks\.1\.extra\.weight \[3, 2\]"):
        load_dit(_save(state, tmp_path))


def test_scale_of_an_unknown_layer_is_named(model, tmp_path):
    state = _state(model)
    state["blocks.0.ffn.1.scale_weight"] = torch.ones(())
    state["blocks.0.ffn.1.scale_input"] = torch.ones(())
    with pytest.raises(ValueError, match=r"unexpected 2 keys: .*blocks\.0\.ffn\.1\.scale_"):
        load_dit(_save(state, tmp_path))


def test_wrong_shape_is_named(model, tmp_path):
    state = _state(model)
    state["blocks.4.norm3.bias"] = torch.zeros(31)
    with pytest.raises(ValueError, match=r"blocks\.4\.norm3\.bias \[31\] \(expected \[32\]\)"):
        load_dit(_save(state, tmp_path))


def test_extra_block_and_missing_face_block_are_listed(model, tmp_path):
    state = _state(model)
    block5 = {k: v for k, v in state.items() if k.startswith("blocks.5.")}
    for index in range(6, 11):  # 11 blocks need a third face block (after block 10)
        state.update({k.replace("blocks.5.", f"blocks.{index}."): v.clone() for k, v in block5.items()})
    with pytest.raises(ValueError, match=r"missing \d+ keys: face_adapter\.fuser_blocks\.2\."):
        load_dit(_save(state, tmp_path))


@pytest.mark.parametrize("in_dim,kind", [(36, "I2V"), (16, "T2V")])
def test_plain_wan_checkpoint_is_recognised(model, tmp_path, in_dim, kind):
    state = {k: v for k, v in _state(model).items()
             if not k.startswith(("pose_patch_embedding.", "motion_encoder.", "face_encoder.", "face_adapter."))}
    state["patch_embedding.weight"] = torch.zeros(32, in_dim, 1, 2, 2)
    with pytest.raises(ValueError, match=rf"Wan 2\.x {kind} checkpoint, not Wan-Animate; missing: pose_patch_embedding"):
        load_dit(_save(state, tmp_path))


def test_unsupported_quant_format_and_bad_dtypes(model, tmp_path):
    state = _state(model)
    state["blocks.0.ffn.0.comfy_quant"] = torch.tensor(list(b'{"format": "nvfp4"}'), dtype=torch.uint8)
    with pytest.raises(ValueError, match="nvfp4"):
        load_dit(_save(state, tmp_path))
    with pytest.raises(ValueError, match="dtype must be"):
        load_dit(_save(_state(model), tmp_path), dtype=FP8)
    with pytest.raises(ValueError, match="storage_dtype"):
        load_dit(_save(_state(model), tmp_path), dtype=torch.float32, storage_dtype=torch.float16)


def test_a_vae_file_is_sent_to_the_vae_loader(tmp_path):
    state = {"encoder.downsamples.0.residual.0.gamma": torch.ones(4, 1, 1, 1), "conv1.weight": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="a Wan VAE, not a Wan-Animate diffusion model"):
        load_dit(_save(state, tmp_path))


def _weight_layers(model) -> list[str]:
    """Every weight of a Linear or convolution of the model (Conv1d/2d/3d, the motion encoder's Equal* layers)."""
    return [f"{name}.weight" for name, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), torch.nn.Parameter) and m.weight.ndim >= 2
            and not name.endswith("direction")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_layer_in_scaled_fp8_runs_the_face_path(model, inputs, tmp_path, dtype):
    state = _state(model)
    names = _weight_layers(model)
    assert any(n.startswith("face_encoder.") for n in names) and any(n.startswith("motion_encoder.") for n in names)
    assert any(n.startswith("face_adapter.") for n in names) and "face_encoder.out_proj.weight" in names
    quantised = {k: quantize(state[k]) for k in names}
    for key, (w8, scale) in quantised.items():
        state[key] = w8
        state[f"{key[: -len('.weight')]}.scale_weight"] = scale.reshape(1)
        state[f"{key[: -len('.weight')]}.scale_input"] = torch.ones(1)
    state["scaled_fp8"] = torch.zeros(2, dtype=FP8)
    path = str(tmp_path / "dit_all_fp8_scaled.safetensors")
    save_file({"model.diffusion_model." + k: v for k, v in state.items()}, path)
    loaded = load_dit(path, dtype=dtype)
    assert isinstance(loaded.face_encoder.out_proj, FP8Linear) and loaded.face_encoder.out_proj.weight.dtype == FP8
    with torch.no_grad():
        motion_vec = loaded.encode_face(inputs["face_pixels"])
    assert motion_vec.dtype == dtype and torch.isfinite(motion_vec).all()
    out = run_dit(loaded, inputs)
    reference = run_dit(_fp8_reference(model, quantised).to(dtype), inputs)
    if dtype == torch.float32:
        assert torch.equal(out, reference)
    else:
        torch.testing.assert_close(out, reference, rtol=0.05, atol=0.05 * reference.abs().max().item())
