"""Write GGUF files of tiny DiTs the way the published Wan-Animate GGUFs are laid out (ComfyUI-GGUF conventions).

Architecture `wan`; 1-D tensors, tensors of at most 1024 values, `.modulation` and the 5-D patch embeddings in F32;
other tensors in BF16; Linear weights whose rows fit the quantisation's blocks in `qtype`. Types the `gguf` package
cannot quantise (the k-quants) get random blocks with small scales, so the reference weights are their
dequantisation. `gguf_lora` makes a LoRA for a model loaded from such a file.
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch
from torch import nn

from wan_animate.runtime.gguf_linear import GGUFLinear

Q = gguf.GGMLQuantizationType
# byte offsets of the float16 scales inside each block
F16_FIELDS = {"Q8_0": (0,), "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q2_K": (80, 82),
              "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}
PYTHON_QUANTISABLE = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"}


def random_blocks(qtype: Q, rows: int, row_length: int, seed: int = 0, scale: float = 1e-3) -> np.ndarray:
    """Random raw blocks of `qtype` ([rows, row bytes] uint8) with finite float16 scales of about `scale`."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (rows * row_length // block_size, type_size), dtype=np.uint8)
    for offset in F16_FIELDS[qtype.name]:
        values = (rng.random((blocks.shape[0], 1)) * scale).astype(np.float16)
        blocks[:, offset:offset + 2] = values.view(np.uint8)
    return blocks.reshape(rows, -1)


def encode(values: np.ndarray, qtype: Q, seed: int = 0) -> np.ndarray:
    """`values` (float32, rows in the last axis) as raw `qtype` data (random blocks for the k-quants)."""
    if qtype.name in PYTHON_QUANTISABLE:
        return gguf.quants.quantize(values, qtype)
    return random_blocks(qtype, int(np.prod(values.shape[:-1])), values.shape[-1], seed)


def storage_type(name: str, tensor: torch.Tensor, linears: set[str], qtype: Q) -> Q:
    """How the converter stores a tensor (see the module docstring)."""
    if tensor.ndim == 1 or tensor.numel() <= 1024 or ".modulation" in name or tensor.ndim > 4:
        return Q.F32
    layer = name[: -len(".weight")]
    block_size = gguf.GGML_QUANT_SIZES[qtype][0]
    if name.endswith(".weight") and layer in linears and tensor.shape[-1] % block_size == 0:
        return qtype
    return Q.BF16


def write_gguf(model: nn.Module, path: str | Path, qtype: Q, prefix: str = "", arch: str = "wan",
               seed: int = 0) -> dict[str, torch.Tensor]:
    """Write `model`'s state dict as a GGUF file; returns the float32 weights the file holds (dequantised)."""
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    writer = gguf.GGUFWriter(str(path), arch=arch)
    held = {}
    for index, (name, tensor) in enumerate(model.state_dict().items()):
        kind = storage_type(name, tensor, linears, qtype)
        values = tensor.detach().float().numpy()
        raw = values if kind == Q.F32 else encode(values, kind, seed + index)
        writer.add_tensor(prefix + name, raw, raw_dtype=kind)
        held[name] = torch.from_numpy(
            gguf.quants.dequantize(raw, kind).reshape(values.shape).astype(np.float32).copy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return held


def gguf_lora(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Low-rank deltas on every quantised layer and on a float one (small tensors stay F32), a dense diff on a
    quantised layer and dense diffs on its bias and a norm: every kind of delta a distill LoRA carries."""
    gen = torch.Generator().manual_seed(seed)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, GGUFLinear)}
    assert len(layers) >= len(model.blocks)
    layers["blocks.0.self_attn.q"] = model.blocks[0].self_attn.q
    state = {}
    for name, layer in layers.items():
        state[f"diffusion_model.{name}.lora_down.weight"] = torch.randn(4, layer.in_features, generator=gen) * 0.2
        state[f"diffusion_model.{name}.lora_up.weight"] = torch.randn(layer.out_features, 4, generator=gen) * 0.2
        state[f"diffusion_model.{name}.alpha"] = torch.tensor(2.0)
    name, layer = next(iter(layers.items()))
    state[f"diffusion_model.{name}.diff"] = torch.randn(layer.out_features, layer.in_features, generator=gen) * 0.05
    state[f"diffusion_model.{name}.diff_b"] = torch.randn(layer.out_features, generator=gen) * 0.1
    state["diffusion_model.blocks.1.norm3.diff"] = torch.randn(model.blocks[1].norm3.weight.shape, generator=gen) * 0.1
    return state
