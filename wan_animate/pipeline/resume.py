"""Resumable jobs: each finished segment's output frames are written to a folder keyed by a hash of the job.

Layout: `<resume_dir>/<job key>/segment_00000.safetensors`, one file per finished segment holding `kept` (the frames
the segment contributes to the output, [3, n, H, W]) and `tail` (its last decoded frames, which condition the next
segment). A re-run of the same job (same inputs, settings and given noise) finds the files and continues after the
last finished segment. The key does not cover the model weights: use another folder after changing models.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping

import torch
from safetensors.torch import load_file, save_file

KEY_LENGTH = 24


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


class SegmentStore:
    """Finished segments of one job in `<root>/<key>/`."""

    def __init__(self, root: str, key: str):
        self.folder = os.path.join(root, key)
        os.makedirs(self.folder, exist_ok=True)

    def _path(self, index: int) -> str:
        return os.path.join(self.folder, f"segment_{index:05d}.safetensors")

    def finished_count(self) -> int:
        """How many segments, from the first on, are finished."""
        count = 0
        while os.path.exists(self._path(count)):
            count += 1
        return count

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept, tail) of a finished segment."""
        tensors = load_file(self._path(index))
        return tensors["kept"], tensors["tail"]

    def save(self, index: int, kept: torch.Tensor, tail: torch.Tensor) -> None:
        """Write a finished segment atomically (a partial file never looks finished)."""
        partial = self._path(index) + ".partial"
        save_file({"kept": kept.contiguous().cpu(), "tail": tail.contiguous().cpu()}, partial)
        os.replace(partial, self._path(index))
