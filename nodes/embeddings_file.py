"""Save and load a job's prompt embeddings and CLIP features in a safetensors file (re-runs skip umT5 and CLIP)."""
from __future__ import annotations

import os

import torch

from wan_animate.io.embeddings import Embeddings, read_embeddings, save_embeddings

from .checks import absent_conditioning, clip_features, conditioning_tokens
from .comfy_compat import input_directory, output_directory

CATEGORY = "WanAnimate/conditioning"
SAVED_FOLDER = "wan_animate_embeddings"  # inside the output folder; Load Embeddings lists it as "<file> [output]"
OUTPUT_TAG = " [output]"


def _saved_files() -> list[str]:
    folder = os.path.join(output_directory(), SAVED_FOLDER)
    if not os.path.isdir(folder):
        return []
    return sorted(f"{SAVED_FOLDER}/{f}{OUTPUT_TAG}" for f in os.listdir(folder) if f.endswith(".safetensors"))


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
        return {"required": {"file": (files + _saved_files(), {
            "tooltip": "a .safetensors file in ComfyUI's input folder, or one Save Embeddings wrote [output]"})}}

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "CLIP_VISION_OUTPUT")
    RETURN_NAMES = ("positive", "negative", "clip_vision_output")
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, file):
        if file.endswith(OUTPUT_TAG):
            path = os.path.join(output_directory(), file[:-len(OUTPUT_TAG)])
        else:
            path = file if os.path.isabs(file) else os.path.join(input_directory(), file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"file '{file}' was not found in the input folder ({input_directory()})")
        embeddings = read_embeddings(path, name=f"file '{file}'")
        positive = [[embeddings.context[None], {}]]
        if embeddings.context_null is not None:
            negative = [[embeddings.context_null[None], {}]]
        else:  # zeros for other nodes; the Sampler refuses cfg > 1 with it, naming the file
            negative = absent_conditioning(positive[0][0], f"file '{file}' (Load Embeddings) has no context_null")
        return (positive, negative, ClipVisionFeatures(embeddings.clip_fea))


class WanAnimateSaveEmbeddings:
    """Write the prompt, the negative prompt and the CLIP features to output/wan_animate_embeddings/ (a new numbered
    file each run), for Load Embeddings or `wan_animate.api.animate_files` to reuse without the encoders."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive": ("CONDITIONING", {"tooltip": "CLIPTextEncode with the umT5 'wan' text encoder"}),
                "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "CLIPVisionEncode of the reference "
                                                                         "(clip_vision_h, crop none)"}),
                "filename_prefix": ("STRING", {"default": "embeds", "tooltip": "file name before the number, "
                                                                               "inside output/wan_animate_embeddings/"}),
            },
            "optional": {"negative": ("CONDITIONING", {"tooltip": "needed later for cfg > 1"})},
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("file",)
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY

    def save(self, positive, clip_vision_output, filename_prefix, negative=None):
        embeddings = Embeddings(
            context=conditioning_tokens(positive, "positive"),
            clip_fea=clip_features(clip_vision_output),
            context_null=None if negative is None else conditioning_tokens(negative, "negative"),
        )
        for name, tensor in (("positive", embeddings.context), ("negative", embeddings.context_null),
                             ("clip_vision_output", embeddings.clip_fea)):
            if tensor is not None and not torch.isfinite(tensor).all():
                raise ValueError(f"{name} holds NaN or infinite values; nothing was saved")
        path = save_embeddings(os.path.join(output_directory(), SAVED_FOLDER), filename_prefix, embeddings)
        name = f"{SAVED_FOLDER}/{path.name}"
        return {"ui": {"text": [name]}, "result": (name + OUTPUT_TAG,)}


NODE_CLASS_MAPPINGS = {
    "WanAnimateLoadEmbeddings": WanAnimateLoadEmbeddings,
    "WanAnimateSaveEmbeddings": WanAnimateSaveEmbeddings,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "WanAnimateLoadEmbeddings": "Wan Animate Load Embeddings",
    "WanAnimateSaveEmbeddings": "Wan Animate Save Embeddings",
}
