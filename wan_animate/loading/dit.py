"""Load a Wan-Animate DiT from any of its published layouts, straight to the target device and dtype.

`load_dit` reads tensor shapes first (no data), infers the configuration, validates every key, builds the model on
the meta device and then reads one tensor at a time to its final device/dtype, assigning it in place.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
from safetensors import safe_open

from ..model.dit import WanAnimateConfig, WanAnimateDiT
from ..model.motion_encoder import blur_kernel
from ..runtime.fp8 import FP8Linear, dequantize, is_fp8, quantize, swap_linears_to_fp8
from .keys import (ANIMATE_DIT, ANIMATE_ONLY_GROUPS, QuantKeys, group_of, quant_format, reject_other_kind,
                   split_quant_keys, strip_model_prefix)
from .gguf_dit import is_gguf, load_gguf_dit
from .state_dict import checkpoint_files, is_safetensors, load_state_dict

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "U8": torch.uint8, "I8": torch.int8,
    "I16": torch.int16, "I32": torch.int32, "I64": torch.int64, "BOOL": torch.bool,
}
COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SHARD_PATTERN = re.compile(r"^(.+)-(\d+)-of-(\d+)\.safetensors$")  # name-00001-of-00003.safetensors
FP8_STORAGE_PREFIXES = ("blocks.", "face_adapter.")  # Linear layers quantised when storage_dtype is fp8
OPTIONAL_CONSTANT_BUFFERS = ".kernel"  # motion-encoder blur kernels: constants, rebuilt when a file omits them
MAX_LISTED_KEYS = 12


# ----- reading checkpoints lazily -----

@dataclass(frozen=True)
class _Entry:
    file: str
    key: str  # the key inside the file
    shape: tuple[int, ...]
    dtype: torch.dtype


class CheckpointIndex:
    """Shapes and dtypes of every tensor of a checkpoint (one or several files), keyed without the model prefix."""

    def __init__(self, paths: str | Iterable[str]):
        paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        self.files = [f for p in paths for f in checkpoint_files(_expand_shard(str(p)))]
        raw: dict[str, _Entry] = {}
        self._torch_states: dict[str, dict[str, torch.Tensor]] = {}
        for file in self.files:
            for entry in self._entries(file):
                if entry.key in raw:
                    raise ValueError(f"key '{entry.key}' appears in both {raw[entry.key].file} and {file}")
                raw[entry.key] = entry
        self.entries = {name: raw[key] for name, key in strip_model_prefix(list(raw)).items()}

    def _entries(self, file: str) -> list[_Entry]:
        if not is_safetensors(file):
            state = load_state_dict(file)  # torch files: memory-mapped, weights_only
            self._torch_states[file] = state
            return [_Entry(file, k, tuple(v.shape), v.dtype) for k, v in state.items()]
        entries = []
        with safe_open(file, framework="pt") as handle:
            for key in handle.keys():
                view = handle.get_slice(key)
                dtype = SAFETENSORS_DTYPES.get(view.get_dtype())
                if dtype is None:
                    raise ValueError(f"{file}: tensor '{key}' has unsupported dtype {view.get_dtype()}")
                entries.append(_Entry(file, key, tuple(view.get_shape()), dtype))
        return entries

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: e.shape for name, e in self.entries.items()}

    @contextlib.contextmanager
    def reader(self, device: torch.device | str):
        """Yields read(name) -> tensor on `device` in the file's dtype, keeping the files open meanwhile."""
        with contextlib.ExitStack() as stack:
            handles = {
                f: stack.enter_context(safe_open(f, framework="pt", device=str(device)))
                for f in self.files if is_safetensors(f)
            }

            def read(name: str) -> torch.Tensor:
                entry = self.entries[name]
                if entry.file in handles:
                    return handles[entry.file].get_tensor(entry.key)
                return self._torch_states[entry.file][entry.key].to(device)

            yield read


def _expand_shard(path: str) -> str:
    """A single shard `name-00001-of-00003.safetensors` stands for the whole sharded checkpoint beside its index
    (`name.safetensors.index.json`, or the folder's only index); a missing index is named in the error."""
    match = SHARD_PATTERN.match(os.path.basename(path))
    if not match or int(match[3]) <= 1 or not os.path.isfile(path):
        return path
    folder = os.path.dirname(path) or "."
    index_name = f"{match[1]}.safetensors.index.json"
    if os.path.isfile(os.path.join(folder, index_name)):
        return os.path.join(folder, index_name)
    indexes = [f for f in os.listdir(folder) if f.endswith(".safetensors.index.json")]
    if len(indexes) == 1:
        return os.path.join(folder, indexes[0])
    raise FileNotFoundError(f"{os.path.basename(path)} is shard {int(match[2])} of {int(match[3])} of a sharded "
                            f"checkpoint, but its index '{index_name}' is missing beside it in {folder}: download "
                            "the index with all the shards into that folder (it names the file of every tensor)")


# ----- configuration from shapes -----

def infer_config(state_dict: Mapping[str, torch.Tensor | tuple[int, ...]]) -> WanAnimateConfig:
    """The WanAnimateConfig of a checkpoint, from tensor shapes only (tensors or shapes, any model prefix).

    `text_len` and `eps` are not visible in shapes and keep the released values (512, 1e-6).
    """
    names = strip_model_prefix(list(state_dict))
    weight_names, _ = split_quant_keys(list(names))
    shapes = {n: tuple(state_dict[names[n]].shape if hasattr(state_dict[names[n]], "shape") else state_dict[names[n]])
              for n in weight_names}
    reject_other_kind(list(shapes), ANIMATE_DIT)
    _reject_plain_wan(shapes)

    def shape(key: str, what: str) -> tuple[int, ...]:
        if key not in shapes:
            raise ValueError(f"checkpoint lacks '{key}', needed to infer the {what}")
        return shapes[key]

    dim, in_dim, *patch = shape("patch_embedding.weight", "model width and patch size")
    num_layers = _count_indexed(shapes, "blocks.")
    if num_layers == 0:
        raise ValueError("checkpoint has no 'blocks.N.*' keys (transformer blocks)")
    head_dim = shape("face_adapter.fuser_blocks.0.q_norm.weight", "attention head size")[0]
    if dim % head_dim:
        raise ValueError(f"face adapter head size {head_dim} does not divide the model width {dim}")
    channels = [shape("motion_encoder.enc.net_app.convs.0.0.weight", "motion encoder widths")[0]]
    while f"motion_encoder.enc.net_app.convs.{len(channels)}.conv2.1.weight" in shapes:
        channels.append(shapes[f"motion_encoder.enc.net_app.convs.{len(channels)}.conv2.1.weight"][0])
    face_hidden = shape("face_encoder.conv2.conv.weight", "face encoder width")[0]
    return WanAnimateConfig(
        dim=dim,
        ffn_dim=shape("blocks.0.ffn.0.weight", "FFN width")[0],
        num_heads=dim // head_dim,
        num_layers=num_layers,
        in_dim=in_dim,
        out_dim=shape("head.head.weight", "output channels")[0] // math.prod(patch),
        freq_dim=shape("time_embedding.0.weight", "timestep frequency size")[1],
        text_dim=shape("text_embedding.0.weight", "text embedding size")[1],
        patch_size=tuple(patch),
        pose_dim=shape("pose_patch_embedding.weight", "pose latent channels")[1],
        clip_dim=shape("img_emb.proj.1.weight", "CLIP feature size")[1],
        motion_encoder_dim=shape("motion_encoder.enc.fc.0.weight", "motion encoder style size")[0],
        motion_dim=shape("motion_encoder.dec.direction.weight", "motion basis size")[1],
        motion_channels=tuple(channels),
        face_hidden_dim=face_hidden,
        face_heads=shape("face_encoder.conv1_local.conv.weight", "face encoder heads")[0] // face_hidden,
    )


def _count_indexed(shapes: Mapping[str, tuple], prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in shapes if k.startswith(prefix) and k[len(prefix)].isdigit()}
    return max(indices) + 1 if indices else 0


def _reject_plain_wan(shapes: Mapping[str, tuple]) -> None:
    """A Wan 2.x I2V/T2V checkpoint has the transformer but none of the Animate modules: say so plainly."""
    present = [g for g in ANIMATE_ONLY_GROUPS if any(k.startswith(g) for k in shapes)]
    if present or "patch_embedding.weight" not in shapes:
        return
    in_dim = shapes["patch_embedding.weight"][1]
    kind = {16: "T2V", 36: "I2V", 48: "TI2V"}.get(in_dim, f"(in_dim {in_dim})")
    missing = ", ".join(f"{g}*" for g in ANIMATE_ONLY_GROUPS)
    raise ValueError(f"this is a Wan 2.x {kind} checkpoint, not Wan-Animate; missing: {missing}")


# ----- validation -----

def check_keys(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> None:
    """Raise one ValueError naming every missing, unexpected and wrongly shaped key (with shapes)."""
    missing = [k for k in expected if k not in found and not k.endswith(OPTIONAL_CONSTANT_BUFFERS)]
    unexpected = [k for k in found if k not in expected]
    wrong = [k for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys: " + _list_keys(missing, expected))
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys: " + _list_keys(unexpected, found))
    if wrong:
        listed = [f"{k} {list(found[k])} (expected {list(expected[k])})" for k in wrong[:MAX_LISTED_KEYS]]
        more = f" and {len(wrong) - MAX_LISTED_KEYS} more" if len(wrong) > MAX_LISTED_KEYS else ""
        problems.append(f"{len(wrong)} keys with wrong shapes: " + ", ".join(listed) + more)
    if problems:
        raise ValueError("checkpoint does not match the Wan-Animate DiT layout: " + "; ".join(problems))


def _list_keys(keys: list[str], shapes: Mapping[str, tuple]) -> str:
    listed = ", ".join(f"{k} {list(shapes[k])}" for k in keys[:MAX_LISTED_KEYS])
    if len(keys) <= MAX_LISTED_KEYS:
        return listed
    groups = sorted({group_of(k) for k in keys})
    return f"{listed} and {len(keys) - MAX_LISTED_KEYS} more (in {', '.join(groups)})"


# ----- loading -----

def load_dit(
    path_or_paths: str | Iterable[str],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.bfloat16,
    storage_dtype: torch.dtype | None = None,
) -> WanAnimateDiT:
    """Load a Wan-Animate DiT checkpoint (file, shard, index json, folder, or several files).

    dtype: compute dtype and storage dtype of every non-fp8 weight (float32, bfloat16 or float16).
    A `.gguf` file is read by `gguf_dit.load_gguf_dit` (its quantised Linear layers stay quantised).
    storage_dtype: None keeps the Linear layers a file stores in fp8 as fp8 (dequantised per layer at forward) and
    everything else in `dtype`; `dtype` dequantises everything at load; torch.float8_e4m3fn / e5m2 additionally stores
    every Linear layer of `blocks.*` and `face_adapter.*` in fp8 with a per-tensor scale (quantising bf16/fp16/fp32
    files on load).
    """
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be one of {COMPUTE_DTYPES}; got {dtype}")
    if storage_dtype is not None and storage_dtype != dtype and not is_fp8(storage_dtype):
        raise ValueError(f"storage_dtype must be None, {dtype} (the dtype) or a float8 dtype; got {storage_dtype}")
    if isinstance(path_or_paths, (str, os.PathLike)) and is_gguf(str(path_or_paths)):
        if storage_dtype is not None:
            raise ValueError("a GGUF file keeps its own quantisation; weight storage must be 'default' for it")
        return load_gguf_dit(str(path_or_paths), device, dtype)

    index = CheckpointIndex(path_or_paths)
    weight_names, quant = split_quant_keys(list(index.entries))
    shapes = {n: index.entries[n].shape for n in weight_names}
    config = infer_config(shapes)
    with torch.device("meta"):
        model = WanAnimateDiT(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    scale_keys = quant.weight_scale_keys
    layer_keys = list(scale_keys.values()) + [k for k in quant.consumed if k != quant.marker]
    stray = {k: index.entries[k].shape for k in layer_keys if f"{k.rsplit('.', 1)[0]}.weight" not in shapes}
    check_keys(expected, {**shapes, **stray})  # quantisation keys of a layer that does not exist are reported too

    fp8_layers = _fp8_layer_names(model, index, weight_names, storage_dtype)
    swap_linears_to_fp8(model, lambda name: name in fp8_layers)
    with index.reader(device) as read:
        _check_quant_configs(quant, read)
        for name in weight_names:
            scale = _per_tensor_scale(read(scale_keys[name]), scale_keys[name]) if name in scale_keys else None
            _assign(model, name, _stored_tensor(model, name, read(name), scale, dtype))
    _fill_constant_buffers(model, device, dtype)
    return model.eval().requires_grad_(False)


def _fp8_layer_names(model: nn.Module, index: CheckpointIndex, names: list[str],
                     storage_dtype: torch.dtype | None) -> set[str]:
    """Qualified names of the nn.Linear layers to keep in fp8."""
    if storage_dtype is not None and not is_fp8(storage_dtype):
        return set()
    linears = {n for n, m in model.named_modules() if type(m) is nn.Linear}
    chosen = {n[: -len(".weight")] for n in names
              if n.endswith(".weight") and is_fp8(index.entries[n].dtype) and n[: -len(".weight")] in linears}
    if storage_dtype is not None:
        chosen |= {n for n in linears if n.startswith(FP8_STORAGE_PREFIXES)}
    return chosen


def _per_tensor_scale(scale: torch.Tensor, key: str) -> torch.Tensor:
    if scale.numel() != 1:
        raise ValueError(f"checkpoint key '{key}' has shape {list(scale.shape)}; a per-tensor scale (one value) "
                         "is expected")
    return scale.float().reshape(())


def _stored_tensor(model: nn.Module, name: str, tensor: torch.Tensor, scale: torch.Tensor | None,
                   dtype: torch.dtype) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The tensor as the model stores it: (fp8 weight, scale) for FP8Linear weights, else `dtype`."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    if isinstance(module, FP8Linear) and attr == "weight":
        if is_fp8(tensor.dtype):
            return tensor, (scale if scale is not None else torch.ones((), device=tensor.device))
        return quantize(dequantize(tensor, scale, torch.float32))
    if is_fp8(tensor.dtype) or scale is not None:
        return dequantize(tensor, scale, dtype)
    return tensor.to(dtype)


def _assign(model: nn.Module, name: str, value: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> None:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    if isinstance(value, tuple):
        weight, scale = value
        module.weight = nn.Parameter(weight, requires_grad=False)
        module.scale_weight = scale.to(device=weight.device, dtype=torch.float32)
    elif attr in module._parameters:
        setattr(module, attr, nn.Parameter(value, requires_grad=False))
    else:
        module._buffers[attr] = value


def _check_quant_configs(quant: QuantKeys, read) -> None:
    for key in quant.consumed:
        if key.endswith(".comfy_quant"):
            quant_format(read(key), key)


def _fill_constant_buffers(model: nn.Module, device: torch.device | str, dtype: torch.dtype) -> None:
    """Rebuild blur kernels a file left out; anything else still on the meta device is a loader bug."""
    for name, buffer in list(model.named_buffers()):
        if not buffer.is_meta:
            continue
        if not name.endswith(OPTIONAL_CONSTANT_BUFFERS):
            raise RuntimeError(f"DiT buffer '{name}' was not loaded")
        module_name, _, attr = name.rpartition(".")
        model.get_submodule(module_name)._buffers[attr] = blur_kernel().to(device=device, dtype=dtype)
    leftovers = [n for n, p in model.named_parameters() if p.is_meta]
    if leftovers:
        raise RuntimeError(f"DiT parameters not loaded: {leftovers[:MAX_LISTED_KEYS]}")
