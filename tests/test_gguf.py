"""GGUF checkpoints of the Animate DiT: dequantisation bit for bit against the `gguf` package, forward parity with
the dequantised float model, offloading of quantised blocks, quantised sizes in the planner, LoRAs on quantised
layers, and bad files."""
import copy

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from helpers_dit import build_tiny_dit, run_dit, tiny_config, tiny_inputs
from helpers_gguf import Q, gguf_lora, random_blocks, write_gguf
from wan_animate.loading.dit import load_dit
from wan_animate.loading.lora import apply_loras, load_lora, remove_loras
from wan_animate.loading.lora_quantised import LoraGGUFLinear
from wan_animate.loading.model_handle import DiTHandle, DiTOptions
from wan_animate.runtime.gguf_dequant import QUANT_TYPES, dequantize
from wan_animate.runtime.gguf_linear import GGUFLinear
from wan_animate.runtime.memory import block_bytes, dequant_workspace_bytes
from wan_animate.runtime.offload import enable_block_offload

DIT_REL_TOL = 1e-4  # the DiT golden tolerance (tests/test_dit_golden.py)
WIDE = dict(dim=256, ffn_dim=256, num_heads=2, num_layers=2, text_dim=32, clip_dim=32)  # rows fit 256-value blocks


@pytest.mark.parametrize("name", [t.name for t in QUANT_TYPES.values()])
def test_dequantisation_equals_the_gguf_reference_bit_for_bit(name):
    qtype = Q[name]
    block_size = gguf.GGML_QUANT_SIZES[qtype][0]
    rows, length = 5, 4 * max(block_size, 32)
    if name in ("F32", "F16", "BF16"):
        values = np.random.default_rng(1).standard_normal((rows, length)).astype(np.float32) * 3
        raw = values if name == "F32" else gguf.quants.quantize(values, qtype)
    else:
        raw = random_blocks(qtype, rows, length, seed=2, scale=0.05)
    reference = gguf.quants.dequantize(raw, qtype)
    ours = dequantize(torch.from_numpy(np.ascontiguousarray(raw).view(np.uint8)), int(qtype), (rows, length))
    assert ours.dtype == torch.float32 and tuple(ours.shape) == reference.shape
    assert np.array_equal(ours.numpy().view(np.int32), reference.view(np.int32))


def assert_close_dit(ours: torch.Tensor, reference: torch.Tensor) -> None:
    error = (ours - reference).abs().max().item()
    assert error <= DIT_REL_TOL * max(1.0, reference.abs().max().item()), error


@pytest.mark.parametrize("qtype, sizes", [(Q.Q8_0, {}), (Q.Q5_1, {}), (Q.Q4_K, WIDE)])
def test_gguf_forward_equals_the_forward_with_dequantised_weights(tmp_path, qtype, sizes):
    config = tiny_config(**sizes)
    source = build_tiny_dit(seed=4, config=config)
    path = tmp_path / f"animate-{qtype.name}.gguf"
    held = write_gguf(source, path, qtype, prefix="model.diffusion_model.")
    model = load_dit(str(path), dtype=torch.float32)
    quantised = [m for m in model.modules() if isinstance(m, GGUFLinear)]
    assert quantised and all(m.qtype == int(qtype) and m.weight.dtype == torch.uint8 for m in quantised)
    reference = build_tiny_dit(config=config)
    reference.load_state_dict(held)
    inputs = tiny_inputs(config)
    assert_close_dit(run_dit(model, inputs), run_dit(reference, inputs))


def test_offloading_streams_quantised_blocks_and_the_planner_counts_them(tmp_path):
    config = tiny_config(**WIDE)
    path = tmp_path / "animate-Q4_K.gguf"
    write_gguf(build_tiny_dit(seed=6, config=config), path, Q.Q4_K)
    model = load_dit(str(path), dtype=torch.float32)
    inputs = tiny_inputs(config)
    expected = run_dit(model, inputs)
    float_model = load_dit(str(path), dtype=torch.float32)
    for layer in [m for m in float_model.blocks.modules() if isinstance(m, GGUFLinear)]:
        layer.weight = layer.dequantized_weight(torch.float32)  # same values, stored as float32
    # a Q4_K row of 256 values is 144 bytes: the quantised blocks are about 1/7 of their float32 size
    assert block_bytes(model.blocks)[0] < block_bytes(float_model.blocks)[0] / 5
    # the plan reserves the float32 temporaries of dequantising the largest quantised layer: the time projection
    assert dequant_workspace_bytes(model) == 16 * (6 * 256) * 256
    assert dequant_workspace_bytes(build_tiny_dit(config=config)) == 0
    offloaded = copy.deepcopy(model)
    offloader = enable_block_offload(offloaded, "cpu", offload_count=2)
    assert offloader.offloaded_bytes >= sum(block_bytes(model.blocks))
    assert torch.equal(run_dit(offloaded, inputs), expected)
    assert torch.equal(run_dit(offloaded, inputs), expected)


def write_plain(path, tensors: dict[str, np.ndarray], arch: str = "wan", raw: dict | None = None) -> None:
    writer = gguf.GGUFWriter(str(path), arch=arch)
    for name, values in tensors.items():
        writer.add_tensor(name, values)
    for name, (data, qtype) in (raw or {}).items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_of_another_architecture_is_refused_naming_it(tmp_path):
    path = tmp_path / "llm.gguf"
    write_plain(path, {"token_embd.weight": np.zeros((8, 4), np.float32)}, arch="llama")
    with pytest.raises(ValueError, match=r"llm.gguf is a GGUF file of architecture 'llama'; expected 'wan'"):
        load_dit(str(path), dtype=torch.float32)


def test_a_wan_i2v_gguf_is_refused_as_not_animate(tmp_path):
    model = build_tiny_dit(seed=1)
    state = {k: v.float().numpy() for k, v in model.state_dict().items()
             if not k.startswith(("pose_patch_embedding", "motion_encoder", "face_encoder", "face_adapter"))}
    path = tmp_path / "wan_i2v.gguf"
    write_plain(path, state)
    with pytest.raises(ValueError, match="Wan 2.x I2V checkpoint, not Wan-Animate"):
        load_dit(str(path), dtype=torch.float32)


def test_a_truncated_gguf_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "animate.gguf"
    write_gguf(build_tiny_dit(seed=2), path, Q.Q8_0)
    cut = tmp_path / "animate_cut.gguf"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"animate_cut.gguf could not be read as a GGUF file \(an incomplete download"):
        load_dit(str(cut), dtype=torch.float32)


def test_an_unsupported_quantisation_type_is_refused_naming_tensor_and_type(tmp_path):
    path = tmp_path / "iq.gguf"
    block = np.zeros((4, 18), np.uint8)  # four IQ4_NL blocks: 4 rows of 32 values
    write_plain(path, {"head.modulation": np.zeros((1, 2, 8), np.float32)},
                raw={"blocks.0.ffn.0.weight": (block, Q.IQ4_NL)})
    with pytest.raises(ValueError, match=r"iq.gguf: tensor 'blocks.0.ffn.0.weight' is stored as IQ4_NL, which is not "
                                         r"supported \(supported: F32, F16, Q4_0"):
        load_dit(str(path), dtype=torch.float32)


def test_fp8_storage_is_refused_for_a_gguf(tmp_path):
    path = tmp_path / "animate.gguf"
    write_gguf(build_tiny_dit(seed=2), path, Q.Q8_0)
    with pytest.raises(ValueError, match="GGUF file keeps its own quantisation"):
        load_dit(str(path), dtype=torch.float32, storage_dtype=torch.float8_e4m3fn)


@pytest.mark.parametrize("qtype, sizes", [(Q.Q8_0, {}), (Q.Q4_K, WIDE)])
def test_loras_on_gguf_layers_equal_the_float_model_with_the_same_loras(tmp_path, qtype, sizes):
    """A LoRA stays a float delta added at dequantisation: the GGUF model with it equals the model with the
    dequantised weights and the same LoRA; other strengths and removal through the handle are exact; offloaded
    blocks carry the factors."""
    config = tiny_config(**sizes)
    path = tmp_path / f"animate-{qtype.name}.gguf"
    held = write_gguf(build_tiny_dit(seed=7, config=config), path, qtype, prefix="model.diffusion_model.")
    handle = DiTHandle(str(path), DiTOptions(dtype=torch.float32))
    lora_path = tmp_path / "lora.safetensors"
    save_file(gguf_lora(handle.model(), seed=8), str(lora_path))
    reference = build_tiny_dit(config=config)
    reference.load_state_dict(held)
    inputs = tiny_inputs(config)
    clean = run_dit(handle.model(), inputs)

    for strength in (1.0, 0.4):
        lora_handle = handle.with_lora(str(lora_path), strength)
        lora_handle.sync_loras()
        model = lora_handle.model()
        assert any(isinstance(m, LoraGGUFLinear) for m in model.modules())
        ours = run_dit(model, inputs)
        report = apply_loras(reference, [(load_lora(str(lora_path)), strength)], runtime=True)
        expected = run_dit(reference, inputs)
        remove_loras(reference, report)
        assert_close_dit(ours, expected)
        assert (ours - clean).abs().max() > 100 * DIT_REL_TOL * clean.abs().max()  # the LoRA does change the output

    offloaded = copy.deepcopy(model)
    offloader = enable_block_offload(offloaded, "cpu", offload_count=2)
    block = max(offloader.packed)
    packed = {id(t) for t in offloader.packed[block].tensors}
    factors = [b for name, b in offloaded.blocks[block].named_buffers() if name.endswith(("_up", "_down", "_dense"))]
    assert factors and all(id(b) in packed for b in factors)
    assert torch.equal(run_dit(offloaded, inputs), ours)

    handle.sync_loras()  # the handle without LoRAs: the quantised layers are plain again, the output exactly clean
    assert not any(isinstance(m, LoraGGUFLinear) for m in handle.model().modules())
    assert torch.equal(run_dit(handle.model(), inputs), clean)


def test_model_loader_lists_and_loads_gguf_files(tmp_path, monkeypatch, pack):
    comfy_compat = pack.nodes.comfy_compat

    class FolderPaths:
        shared = {".safetensors", ".pt"}
        folder_names_and_paths = {"diffusion_models": (["models/unet", "models/diffusion_models"], shared),
                                  "loras": (["models/loras"], shared)}

    monkeypatch.setattr(comfy_compat, "folder_paths", FolderPaths)
    comfy_compat.add_model_extension("diffusion_models", ".gguf")
    assert FolderPaths.folder_names_and_paths["diffusion_models"][1] == {".safetensors", ".pt", ".gguf"}
    assert FolderPaths.folder_names_and_paths["loras"][1] == {".safetensors", ".pt"}  # the shared set is untouched
    monkeypatch.setattr(comfy_compat, "folder_paths", None)

    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    write_gguf(build_tiny_dit(seed=2), folder / "animate-Q8_0.gguf", Q.Q8_0)
    monkeypatch.setenv("WAN_ANIMATE_MODELS_DIR", str(tmp_path))
    loader = pack.nodes.loaders.WanAnimateModelLoader()
    assert "animate-Q8_0.gguf" in loader.INPUT_TYPES()["required"]["model_name"][0]
    (handle,) = loader.load("animate-Q8_0.gguf", "fp32", "default", "sdpa", "auto")
    assert any(isinstance(m, GGUFLinear) for m in handle.model().modules())
    with pytest.raises(ValueError, match="model_name 'animate-Q8_0.gguf': a GGUF file keeps its own quantisation"):
        loader.load("animate-Q8_0.gguf", "fp32", "fp8_e4m3fn", "sdpa", "auto")
