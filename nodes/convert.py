"""Conversions between ComfyUI's IMAGE / MASK tensors and the library's uint8 arrays."""
from __future__ import annotations

import numpy as np
import torch


def image_to_u8(image: torch.Tensor, name: str) -> np.ndarray:
    """ComfyUI IMAGE [F, H, W, C] float 0..1 -> uint8 RGB [F, H, W, 3] (alpha dropped)."""
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError(f"{name}: expected an IMAGE [frames, height, width, 3]; got shape {tuple(image.shape)}")
    if image.shape[0] == 0:
        raise ValueError(f"{name} has 0 frames; at least 1 is needed")
    return (image[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def u8_to_image(frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> ComfyUI IMAGE float32 0..1."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0


def mask_to_tensor(mask: np.ndarray) -> torch.Tensor:
    """float 0..1 [F, H, W] -> ComfyUI MASK."""
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))


def mask_to_u8(mask: np.ndarray) -> np.ndarray:
    """float 0..1 [F, H, W] -> uint8 RGB [F, H, W, 3] for previews."""
    grey = (np.clip(mask, 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
