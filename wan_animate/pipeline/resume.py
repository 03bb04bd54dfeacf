"""Resumable jobs: each finished segment's output frames are written to a folder keyed by a hash of the job.

Layout: `<resume_dir>/<job key>/segment_00000.safetensors`, one file per finished segment holding `kept` (the frames
the segment contributes to the output, [3, n, H, W]) and `tail` (its last decoded frames, which condition the next
segment); its metadata names the job key and the segment index. A re-run of the same job (same inputs, settings,
models and given noise) finds the files and continues after the last finished segment. The key covers the models
through `GenerationSettings.models`, an identity built here by `models_identity` from the DiT file's identity
(`file_identity`: path, size and modification time, not a hash of tens of GB), its storage and dtype, the LoRA stack
and the VAE. A segment file that is truncated, unreadable or written for another job is named in a warning and
computed again, with every segment after it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

KEY_LENGTH = 24
SAMPLES_PER_TENSOR = 1024
log = logging.getLogger(__name__)


def _update_with_tensor(digest: "hashlib._Hash", name: str, tensor: torch.Tensor) -> None:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())


def job_key(settings: Mapping[str, object], tensors: Iterable[tuple[str, torch.Tensor | None]]) -> str:
    """Hex digest over the settings (JSON) and the named tensors (dtype, shape and bytes; None counts as absent)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    for name, tensor in tensors:
        if tensor is None:
            digest.update(f"{name}:none;".encode())
        else:
            _update_with_tensor(digest, name, tensor)
    return digest.hexdigest()[:KEY_LENGTH]


def file_identity(path: str) -> dict[str, object]:
    """A file's identity without reading it: real path, size and modification time (ns)."""
    stat = os.stat(path)
    return {"path": os.path.realpath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def module_fingerprint(module: torch.nn.Module) -> str:
    """A content fingerprint of a module's weights that reads only a little of them: per parameter and buffer its
    name, dtype, shape, float64 sum and up to SAMPLES_PER_TENSOR evenly strided values (computed where they live)."""
    digest = hashlib.sha256()
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        flat = tensor.detach().reshape(-1)
        if flat.element_size() == 1:  # fp8 / int8 / bool: sum the raw bytes (fp8 sums are missing on some devices)
            flat = flat.view(torch.uint8)
        step = max(1, flat.numel() // SAMPLES_PER_TENSOR)
        sample = flat[::step][:SAMPLES_PER_TENSOR].to("cpu", torch.float64)
        total = flat.sum(dtype=torch.float64).item() if flat.numel() else 0.0
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:{total!r};".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def models_identity(dit: Mapping[str, object], vae: Mapping[str, object]) -> str:
    """The value of `GenerationSettings.models`: a digest of the DiT's and the VAE's identities (JSON mappings)."""
    text = json.dumps({"dit": dict(dit), "vae": dict(vae)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class SegmentStore:
    """Finished segments of one job in `<root>/<key>/`."""

    def __init__(self, root: str, key: str):
        self.key = key
        self.folder = os.path.join(root, key)
        os.makedirs(self.folder, exist_ok=True)

    def _path(self, index: int) -> str:
        return os.path.join(self.folder, f"segment_{index:05d}.safetensors")

    def finished_count(self) -> int:
        """How many segments, from the first on, are finished and valid; the first invalid file is named in a
        warning and it and every later segment count as not finished (they are computed and written again)."""
        count = 0
        while os.path.exists(self._path(count)):
            problem = self._problem(count)
            if problem is not None:
                log.warning("resume: %s is not usable (%s); computing the job again from segment %d",
                            self._path(count), problem, count)
                break
            count += 1
        return count

    def _problem(self, index: int) -> str | None:
        """Why segment file `index` cannot be used, or None when its header is complete and belongs to this job."""
        path = self._path(index)
        try:
            with safe_open(path, framework="pt") as file:
                metadata = file.metadata() or {}
                shapes = {name: file.get_slice(name).get_shape() for name in file.keys()}
                dtypes = {name: file.get_slice(name).get_dtype() for name in file.keys()}
        except (SafetensorError, OSError) as error:
            return f"unreadable: {error}"
        if metadata.get("job") != self.key or metadata.get("segment") != str(index):
            return (f"written for job {metadata.get('job')!r} segment {metadata.get('segment')!r}, expected job "
                    f"{self.key!r} segment {index}")
        if set(shapes) != {"kept", "tail"}:
            return f"holds tensors {sorted(shapes)}, expected kept and tail"
        kept, tail = shapes["kept"], shapes["tail"]
        if len(kept) != 4 or len(tail) != 4 or kept[0] != 3 or tail[0] != 3 or kept[2:] != tail[2:] or tail[1] < 1:
            return f"kept {kept} and tail {tail}, expected [3, n, H, W] frames of one size"
        if any(dtype not in ("F32", "F16", "BF16") for dtype in dtypes.values()):
            return f"dtypes {dtypes}, expected floating point frames"
        return None

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept, tail) of a finished segment."""
        tensors = load_file(self._path(index))
        return tensors["kept"], tensors["tail"]

    def save(self, index: int, kept: torch.Tensor, tail: torch.Tensor) -> None:
        """Write a finished segment atomically (a partial file never looks finished)."""
        partial = self._path(index) + ".partial"
        save_file({"kept": kept.contiguous().cpu(), "tail": tail.contiguous().cpu()}, partial,
                  metadata={"job": self.key, "segment": str(index)})
        os.replace(partial, self._path(index))
