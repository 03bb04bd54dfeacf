"""Load a Wan-Animate DiT from a GGUF file (the ComfyUI-GGUF / llama.cpp quantisations of Wan2.2-Animate-14B).

Conventions of the published files (city96's ComfyUI-GGUF `tools/convert.py` and its llama.cpp quantiser): the
architecture field is `wan`; tensors keep the checkpoint's key names (a `model.diffusion_model.` prefix is accepted
too); GGUF dims are stored fastest-first, so a tensor's torch shape is its GGUF shape reversed, unless a
`comfy.gguf.orig_shape.<name>` array gives it; 1-D tensors, tensors of at most 1024 values and `.modulation` are F32;
the 5-D patch-embedding convolution weights are F32 tensors with their full 5-D shape (added by `fix_5d_tensors.py`).
The file is memory-mapped: the Linear layers stored in a quantised type stay quantised (GGUFLinear, read from the
mapping as needed); every other tensor (norms, biases, embeddings, convolutions, modulation) is dequantised once to
the compute dtype.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from ..model.dit import WanAnimateDiT
from ..runtime.gguf_dequant import FLOAT_TYPES, QUANT_TYPES, dequantize
from ..runtime.gguf_linear import swap_linears_to_gguf
from .keys import strip_model_prefix

GGUF_ARCHITECTURE = "wan"
ORIG_SHAPE_PREFIX = "comfy.gguf.orig_shape."


@dataclass(frozen=True)
class GGUFEntry:
    """One tensor of a GGUF file: ggml type id, torch shape, and its raw bytes (a view of the memory map)."""

    qtype: int
    shape: tuple[int, ...]
    raw: np.ndarray

    def tensor(self) -> torch.Tensor:
        """The raw bytes as a uint8 torch tensor sharing the memory map (nothing is read until used)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(self.raw.reshape(-1).view(np.uint8))


def is_gguf(path: str) -> bool:
    return str(path).lower().endswith(".gguf")


def read_gguf(path: str) -> dict[str, GGUFEntry]:
    """The tensors of a GGUF file of the Wan architecture, by name in the file; ValueError naming the file and what
    was found for another architecture, a damaged file or an unsupported quantisation type."""
    import gguf

    try:
        reader = gguf.GGUFReader(path, "r")
    except (ValueError, IndexError, KeyError, OSError) as error:
        raise ValueError(f"{path} could not be read as a GGUF file (an incomplete download, or not a GGUF file?): "
                         f"{error}") from error
    architecture = _string_field(reader, "general.architecture")
    if architecture is not None and architecture != GGUF_ARCHITECTURE:
        raise ValueError(f"{path} is a GGUF file of architecture '{architecture}'; expected '{GGUF_ARCHITECTURE}' "
                         "(a conversion of Wan2.2-Animate-14B)")
    entries = {}
    for tensor in reader.tensors:
        qtype = int(tensor.tensor_type)
        if qtype not in QUANT_TYPES:
            supported = ", ".join(t.name for t in QUANT_TYPES.values())
            raise ValueError(f"{path}: tensor '{tensor.name}' is stored as {tensor.tensor_type.name}, which is not "
                             f"supported (supported: {supported})")
        shape = _orig_shape(reader, tensor.name) or tuple(int(d) for d in reversed(tensor.shape.tolist()))
        layout = QUANT_TYPES[qtype]
        expected = int(np.prod(shape)) // layout.block_size * layout.type_size
        if tensor.data.nbytes != expected:
            raise ValueError(f"{path}: tensor '{tensor.name}' holds {tensor.data.nbytes} bytes; {layout.name} "
                             f"{list(shape)} needs {expected} (a truncated file?)")
        entries[tensor.name] = GGUFEntry(qtype, shape, tensor.data)
    return entries


def gguf_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Torch shapes of a GGUF file's tensors by name without the model prefix."""
    entries = read_gguf(path)
    return {name: entries[key].shape for name, key in strip_model_prefix(list(entries)).items()}


def load_gguf_dit(path: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16) -> WanAnimateDiT:
    """A Wan-Animate DiT from a GGUF file: quantised Linear weights stay quantised, the rest in `dtype`."""
    from .dit import _assign, _fill_constant_buffers, check_keys, infer_config

    entries = read_gguf(path)
    names = strip_model_prefix(list(entries))
    shapes = {name: entries[key].shape for name, key in names.items()}
    config = infer_config(shapes)
    with torch.device("meta"):
        model = WanAnimateDiT(config)
    check_keys({k: tuple(v.shape) for k, v in model.state_dict().items()}, shapes)
    linears = {n for n, m in model.named_modules() if type(m) is nn.Linear}
    quantised = {name[: -len(".weight")]: entries[key].qtype for name, key in names.items()
                 if name.endswith(".weight") and name[: -len(".weight")] in linears
                 and entries[key].qtype not in FLOAT_TYPES}
    swap_linears_to_gguf(model, quantised)
    for name, key in names.items():
        entry = entries[key]
        raw = entry.tensor().to(device)
        layer = name[: -len(".weight")]
        if layer in quantised and name.endswith(".weight"):
            module = model.get_submodule(layer)
            module.weight = raw.reshape(module.out_features, -1)  # [out, row bytes]
        else:
            # copy=True: an F32 tensor in float32 would otherwise stay a view of the read-only mapping, and a merged
            # LoRA (biases, norms, modulation) writing into it would crash the process
            _assign(model, name, dequantize(raw, entry.qtype, entry.shape).to(dtype, copy=True))
    _fill_constant_buffers(model, device, dtype)
    return model.eval().requires_grad_(False)


def _string_field(reader, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None:
        return None
    return bytes(field.parts[field.data[-1]]).decode("utf-8")


def _orig_shape(reader, name: str) -> tuple[int, ...] | None:
    field = reader.get_field(ORIG_SHAPE_PREFIX + name)
    if field is None:
        return None
    return tuple(int(field.parts[index][0]) for index in field.data)
