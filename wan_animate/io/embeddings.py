"""The prompt, negative prompt and CLIP features of a job in one .safetensors file, so a job can run again without
the text and image encoders (written by the Save Embeddings node, read by Load Embeddings and `wan_animate.api`)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

EXPECTED_SHAPES = {"context": "[tokens, 4096]", "context_null": "[tokens, 4096]", "clip_fea": "[1, 257, 1280]"}
EXPECTED_RANKS = {"context": 2, "context_null": 2, "clip_fea": 3}


@dataclass
class Embeddings:
    """context [L, 4096]: umT5 embeddings of the prompt; context_null [L', 4096]: of the negative prompt (needed for
    cfg > 1); clip_fea [1, 257, 1280]: CLIP ViT-H penultimate features of the reference."""

    context: torch.Tensor
    clip_fea: torch.Tensor
    context_null: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        named = {"context": self.context, "clip_fea": self.clip_fea, "context_null": self.context_null}
        for name, tensor in named.items():
            if tensor is not None and tensor.ndim != EXPECTED_RANKS[name]:
                raise ValueError(f"{name} has shape {tuple(tensor.shape)}; expected {EXPECTED_SHAPES[name]}")
            if tensor is not None and not torch.isfinite(tensor).all():
                raise ValueError(f"{name} holds NaN or infinite values")
        return {k: v.detach().float().cpu().contiguous() for k, v in named.items() if v is not None}


def read_embeddings(path: str | os.PathLike, name: str | None = None) -> Embeddings:
    """The embeddings of a file written by `save_embeddings` (or by hand with the same tensor names).

    Errors call the file `name` (default: its path in quotes)."""
    name = f"'{path}'" if name is None else name
    if not os.path.isfile(path):
        raise FileNotFoundError(f"embeddings file {name} does not exist")
    try:
        tensors = load_file(str(path))
    except SafetensorError as error:
        raise ValueError(f"{name} is not a readable .safetensors file: {error}") from error
    missing = [k for k in ("context", "clip_fea") if k not in tensors]
    if missing:
        raise ValueError(f"{name}: missing tensors {missing}; expected context [L, 4096], clip_fea [1, 257, 1280] "
                         f"and optionally context_null; found {sorted(tensors)}")
    context_null = tensors.get("context_null")
    embeddings = Embeddings(tensors["context"].float(), tensors["clip_fea"].float(),
                            None if context_null is None else context_null.float())
    try:
        embeddings.tensors()
    except ValueError as error:
        raise ValueError(f"{name}: {error}; save the embeddings again from the encoders") from error
    return embeddings


def save_embeddings(folder: str | os.PathLike, prefix: str, embeddings: Embeddings) -> Path:
    """Write `folder/<prefix>_00001.safetensors` (the next free number; an existing file is never replaced).
    `prefix` may hold subfolders (`embeddings/dance`)."""
    data = save(embeddings.tensors())
    target = Path(folder) / prefix
    if not target.resolve().parent.is_relative_to(Path(folder).resolve()) or not target.name:
        raise ValueError(f"filename_prefix '{prefix}' leaves the folder {folder}; use a name or a subfolder/name")
    target.parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(target.name) + r"_(\d{5,})\.safetensors")
    taken = [int(m.group(1)) for name in os.listdir(target.parent) if (m := pattern.fullmatch(name))]
    number = max(taken, default=0) + 1
    while True:
        path = target.parent / f"{target.name}_{number:05d}.safetensors"
        try:
            with open(path, "xb") as handle:
                handle.write(data)
            return path
        except FileExistsError:  # written by another job since the listing
            number += 1
