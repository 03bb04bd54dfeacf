"""The model's conditioning for one segment: y (4 mask channels + 16 condition-latent channels) and pose latents.

y has one reference slot followed by the segment's latent frames:
- reference slot: mask 1 on all 4 channels, the VAE latent of the reference image;
- segment slots: a pixel-rate mask (1 = keep this pixel from the condition) folded into 4 channels per latent frame
  (the first frame repeated 4 times, then 4 consecutive frames per latent), and the VAE latent of the condition video:
  Animation: the guidance frames then zeros; Replacement: the guidance frames then the background video, with the mask
  1 - person mask (nearest-resized to latent size). Guidance frames always get mask 1.
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

MODES = ("animate", "replace")


class VideoVAE(Protocol):
    def encode(self, video: torch.Tensor) -> torch.Tensor: ...  # [B, 3, F, H, W] in [-1, 1] -> [B, 16, T, h, w]

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...  # [B, 16, T, h, w] -> [B, 3, F, H, W]


def fold_pixel_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pixel mask [F, h, w] (F = 4k+1) -> [4, T, h, w], T = k+1: frame 0 fills latent 0, then 4 frames per latent."""
    frames, height, width = mask.shape
    if (frames - 1) % 4 != 0:
        raise ValueError(f"mask has {frames} frames; expected 4k+1")
    padded = torch.cat([mask[:1].expand(4, height, width), mask[1:]], dim=0)  # [4T, h, w]
    return padded.reshape(-1, 4, height, width).transpose(0, 1)  # [4, T, h, w]


def segment_mask(
    frames: int, lat_h: int, lat_w: int, guide_frames: int, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """The 4-channel mask of a segment's latent frames: [4, T, lat_h, lat_w].

    keep: [frames, lat_h, lat_w] pixel-rate mask of what to keep from the condition (Replacement), else zeros.
    The first guide_frames frames are set to 1.
    """
    if keep is None:
        mask = torch.zeros(frames, lat_h, lat_w)
    else:
        if tuple(keep.shape) != (frames, lat_h, lat_w):
            raise ValueError(f"keep mask has shape {tuple(keep.shape)}; expected {(frames, lat_h, lat_w)}")
        mask = keep.clone()
    mask[:guide_frames] = 1
    return fold_pixel_mask(mask)


def keep_mask_at_latent_size(person_mask: torch.Tensor, lat_h: int, lat_w: int) -> torch.Tensor:
    """1 - person mask [F, H, W] in 0..1, nearest-resized to [F, lat_h, lat_w]."""
    keep = (1 - person_mask).unsqueeze(1)  # [F, 1, H, W]
    return F.interpolate(keep, size=(lat_h, lat_w), mode="nearest")[:, 0]


def encode_video(vae: VideoVAE, video: torch.Tensor, device: torch.device) -> torch.Tensor:
    """VAE latents [16, T, h, w] of one video [3, F, H, W] in [-1, 1], returned float32 on `device`."""
    return vae.encode(video.unsqueeze(0))[0].to(device=device, dtype=torch.float32)


def reference_condition(vae: VideoVAE, reference: torch.Tensor, device: torch.device) -> torch.Tensor:
    """y of the reference slot: [20, 1, h, w] from the reference image [3, H, W] in [-1, 1]."""
    latent = encode_video(vae, reference.unsqueeze(1), device)  # [16, 1, h, w]
    mask = torch.ones(4, 1, *latent.shape[-2:], device=device)
    return torch.cat([mask, latent], dim=0)


def segment_condition(
    vae: VideoVAE,
    guide: torch.Tensor | None,
    background: torch.Tensor | None,
    person_mask: torch.Tensor | None,
    frames: int,
    height: int,
    width: int,
    device: torch.device,
) -> torch.Tensor:
    """y of the segment's latent frames: [20, T, h, w].

    guide: [3, G, H, W] guidance frames in [-1, 1] (None for the first segment). background [3, frames, H, W] in
    [-1, 1] and person_mask [frames, H, W] in 0..1 for Replacement, both None for Animation.
    """
    guide_frames = 0 if guide is None else guide.shape[1]
    if background is None:
        rest = torch.zeros(3, frames - guide_frames, height, width, dtype=torch.float32)
    else:
        rest = background[:, guide_frames:]
    parts = [rest] if guide is None else [guide.to(rest), rest]
    latent = encode_video(vae, torch.cat(parts, dim=1), device)  # [16, T, h, w]
    lat_h, lat_w = latent.shape[-2:]
    keep = None if person_mask is None else keep_mask_at_latent_size(person_mask, lat_h, lat_w)
    mask = segment_mask(frames, lat_h, lat_w, guide_frames, keep).to(device)
    return torch.cat([mask, latent], dim=0)


def pose_latents(vae: VideoVAE, pose: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Latents [16, T, h, w] of the segment's skeleton video [3, frames, H, W] in [-1, 1]."""
    return encode_video(vae, pose, device)
