"""Read checkpoint files into state dicts: single safetensors (.safetensors or .sft), sharded safetensors with an
index, torch files (zip or legacy torch.save format, always weights_only)."""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from safetensors import SafetensorError, safe_open

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES


def is_safetensors(path: str) -> bool:
    return path.lower().endswith(SAFETENSORS_SUFFIXES)


def checkpoint_files(path: str) -> list[str]:
    """The files behind `path`: itself, every shard of a sharded checkpoint, or the shards named by an index."""
    if os.path.isdir(path):
        index = [f for f in os.listdir(path) if f.endswith(".safetensors.index.json")]
        if index:
            return checkpoint_files(os.path.join(path, index[0]))
        shards = sorted(f for f in os.listdir(path) if is_safetensors(f))
        if not shards:
            raise FileNotFoundError(f"checkpoint folder {path} holds no .safetensors file")
        return [os.path.join(path, f) for f in shards]
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.endswith(".index.json"):
        with open(path) as f:
            weight_map = json.load(f)["weight_map"]
        folder = os.path.dirname(path)
        return [os.path.join(folder, name) for name in sorted(set(weight_map.values()))]
    return [path]


def load_state_dict(
    paths: str | Iterable[str], device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """All tensors of one checkpoint (one or several files), read straight to `device`.

    Floating-point tensors are cast to `dtype` when given, one tensor at a time; fp8 tensors are kept as they are
    so that scaled-fp8 checkpoints can be dequantised by their loader.
    """
    files = checkpoint_files(paths) if isinstance(paths, str) else [f for p in paths for f in checkpoint_files(p)]
    state: dict[str, torch.Tensor] = {}
    for file in files:
        for key, tensor in _read_file(file, device).items():
            if key in state:
                raise ValueError(f"key '{key}' appears in more than one file of checkpoint {files}")
            if dtype is not None and tensor.is_floating_point() and tensor.element_size() > 1:
                tensor = tensor.to(dtype)
            state[key] = tensor
    return state


def checkpoint_key_names(path: str) -> list[str]:
    """Key names of the safetensors files behind `path`, read from their headers without any tensor (torch files
    cannot be listed without loading them: they contribute none)."""
    names: list[str] = []
    for file in checkpoint_files(path):
        if is_safetensors(file):
            with _damaged_file_errors(file), safe_open(file, framework="pt") as handle:
                names += list(handle.keys())
    return names


@contextmanager
def _damaged_file_errors(file: str) -> Iterator[None]:
    """Turn the readers' errors on a damaged or truncated file into a ValueError naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, OSError, EOFError) as error:
        raise ValueError(f"{file} could not be read (an incomplete download or not a checkpoint?): {error}") from error


def _read_file(file: str, device: str | torch.device) -> dict[str, torch.Tensor]:
    with _damaged_file_errors(file):
        return _read_tensors(file, device)


def _read_tensors(file: str, device: str | torch.device) -> dict[str, torch.Tensor]:
    if file.lower().endswith(TORCH_SUFFIXES):
        # memory-mapped when the file is a zip archive (torch >= 1.6); legacy torch.save files cannot be mapped
        data = torch.load(file, map_location=device, weights_only=True, mmap=zipfile.is_zipfile(file))
        if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
            data = data["state_dict"]
        if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
            raise ValueError(f"{file} is not a tensor state dict")
        return data
    if not is_safetensors(file):
        raise ValueError(f"{file}: unsupported checkpoint format (expected one of {', '.join(CHECKPOINT_SUFFIXES)})")
    with safe_open(file, framework="pt", device=str(device)) as f:
        return {key: f.get_tensor(key) for key in f.keys()}


def strip_prefix(state: dict[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Remove the first of `prefixes` that every key starts with (`model.diffusion_model.`, ...)."""
    for prefix in prefixes:
        if state and all(key.startswith(prefix) for key in state):
            return {key[len(prefix):]: value for key, value in state.items()}
    return state
