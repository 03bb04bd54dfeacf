"""A test-only ComfyUI node that emits previews under the pack's preview contract (docs/COMFYUI_TESTING.md).

Loaded only by the test harness (tests/comfyui_server.py adds this folder as an extra custom_nodes path), never by
the pack: it lets the browser tests check web/wan_animate.js end to end before the pack's own nodes produce previews.
"""
import os
import uuid

import numpy as np
import torch
from PIL import Image, ImageDraw

import folder_paths

COLOURS = {"pose": (40, 200, 255), "face": (255, 180, 120), "mask": (255, 255, 255)}


def _frame(kind: str, index: int, count: int, size: int = 96) -> Image.Image:
    """A square frame with a block that moves with `index`, coloured per kind."""
    image = Image.new("RGB", (size, size), (10, 10, 10))
    draw = ImageDraw.Draw(image)
    x = int((size - 24) * index / max(1, count - 1))
    draw.rectangle([x, 36, x + 24, 60], fill=COLOURS.get(kind, (200, 200, 200)))
    draw.text((4, 4), f"{kind} {index}", fill=(230, 230, 230))
    return image


class WanAnimateTestPreviewProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": ("INT", {"default": 4, "min": 1, "max": 64}),
            "kinds": ("STRING", {"default": "pose,face,mask"}),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "WanAnimate/testing"

    def run(self, frames: int, kinds: str):
        temp_dir = folder_paths.get_temp_directory()
        os.makedirs(temp_dir, exist_ok=True)
        refs, groups, tensors = [], [], []
        for kind in [k.strip() for k in kinds.split(",") if k.strip()]:
            for index in range(frames):
                image = _frame(kind, index, frames)
                name = f"wan_probe_{kind}_{index:03d}_{uuid.uuid4().hex[:6]}.png"
                image.save(os.path.join(temp_dir, name))
                refs.append({"filename": name, "subfolder": "", "type": "temp"})
                tensors.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0))
            groups.append({"kind": kind, "count": frames, "fps": 4})
        return {"ui": {"images": refs, "wan_animate_previews": groups}, "result": (torch.stack(tensors),)}


NODE_CLASS_MAPPINGS = {"WanAnimateTestPreviewProbe": WanAnimateTestPreviewProbe}
NODE_DISPLAY_NAME_MAPPINGS = {"WanAnimateTestPreviewProbe": "Wan Animate test preview probe"}
