"""Load precomputed prompt embeddings and CLIP features from a safetensors file (skips loading umT5 and CLIP)."""
from __future__ import annotations

import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .checks import absent_conditioning, all_finite
from .comfy_compat import input_directory

CATEGORY = "WanAnimate/conditioning"
EXPECTED_SHAPES = {"context": "[tokens, 4096]", "context_null": "[tokens, 4096]", "clip_fea": "[1, 257, 1280]"}
EXPECTED_RANKS = {"context": 2, "context_null": 2, "clip_fea": 3}


class ClipVisionFeatures:
    """Stands in for ComfyUI's CLIP_VISION_OUTPUT: attribute and item access to `penultimate_hidden_states`."""

    def __init__(self, penultimate_hidden_states: torch.Tensor):
        self.penultimate_hidden_states = penultimate_hidden_states

    def __getitem__(self, key: str) -> torch.Tensor:
        return getattr(self, key)


class WanAnimateLoadEmbeddings:
    """Read `context` [L, 4096], optional `context_null` [L', 4096] and `clip_fea` [1, 257, 1280] from a
    .safetensors file in ComfyUI's input folder (saved once from the encoders, reused for every job).

    Without `context_null` the negative output is a placeholder the pack's nodes know as absent: zeros for other
    nodes, an error naming the file at a Wan Animate Sampler with cfg > 1."""

    @classmethod
    def INPUT_TYPES(cls):
        folder = input_directory()
        files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors")) if os.path.isdir(folder) else []
        return {"required": {"file": (files, {"tooltip": "a .safetensors file in ComfyUI's input folder"})}}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "CLIP_VISION_OUTPUT")
    RETURN_NAMES = ("positive", "negative", "clip_vision_output")
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, file):
        path = file if os.path.isabs(file) else os.path.join(input_directory(), file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"file '{file}' was not found in the input folder ({input_directory()})")
        try:
            tensors = load_file(path)
        except SafetensorError as error:
            raise ValueError(f"file '{file}' is not a readable .safetensors file: {error}") from error
        missing = [k for k in ("context", "clip_fea") if k not in tensors]
        if missing:
            raise ValueError(f"file '{file}': missing tensors {missing}; expected context [L, 4096], clip_fea "
                             f"[1, 257, 1280] and optionally context_null; found {sorted(tensors)}")
        for name, rank in EXPECTED_RANKS.items():
            if name in tensors and tensors[name].ndim != rank:
                raise ValueError(f"file '{file}': {name} has shape {tuple(tensors[name].shape)}; expected "
                                 f"{EXPECTED_SHAPES[name]}")
        for name in EXPECTED_RANKS:
            if name in tensors and not all_finite(tensors[name]):
                raise ValueError(f"file '{file}': {name} holds NaN or infinite values; save the embeddings again "
                                 "from the encoders")
        positive = [[tensors["context"][None].float(), {}]]
        if "context_null" in tensors:
            negative = [[tensors["context_null"][None].float(), {}]]
        else:  # zeros for other nodes; the Sampler refuses cfg > 1 with it, naming the file
            negative = absent_conditioning(positive[0][0], f"file '{file}' (Load Embeddings) has no context_null")
        return (positive, negative, ClipVisionFeatures(tensors["clip_fea"].float()))


NODE_CLASS_MAPPINGS = {"WanAnimateLoadEmbeddings": WanAnimateLoadEmbeddings}
NODE_DISPLAY_NAME_MAPPINGS = {"WanAnimateLoadEmbeddings": "Wan Animate Load Embeddings"}
