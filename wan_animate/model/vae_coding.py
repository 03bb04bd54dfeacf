"""How the pipeline codes video with the VAE: whole frames, or overlapping spatial tiles to bound memory."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..runtime.memory import estimate_vae_bytes
from .vae import DEFAULT_OVERLAP, DEFAULT_TILE, WanVAE


@dataclass(frozen=True)
class VAECoder:
    """A WanVAE with its coding options; `encode` / `decode` as WanVAE's, with those options applied."""

    vae: WanVAE
    tiled: bool = False
    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP

    def __post_init__(self) -> None:
        if self.tiled and not 0 <= self.overlap < self.tile:
            raise ValueError(f"VAE tile overlap is {self.overlap}; expected 0 <= overlap < tile ({self.tile})")

    def workspace_bytes(self, frames: int, height: int, width: int) -> int:
        """Estimated peak VRAM of coding a `frames`-frame height x width video with these options."""
        tile = self.tile * self.vae.config.spatial_stride if self.tiled else None
        return estimate_vae_bytes(self.vae.config.dim, frames, height, width, self.vae.dtype, tile)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(video, tiled=self.tiled, tile=self.tile, overlap=self.overlap)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent, tiled=self.tiled, tile=self.tile, overlap=self.overlap)
