"""The Wan2.1 causal video VAE: video [B, 3, 1+4k, H, W] in [-1, 1] <-> normalised latent [B, 16, 1+k, H/8, W/8].

Encoding runs the first frame alone, then chunks of 4 frames, each producing one latent frame; decoding runs one
latent frame at a time (1 frame out for the first, 4 for every later one). A `TemporalCache` carries each causal
layer's left context from chunk to chunk, so only one chunk of activations is alive at a time and the result equals
coding the whole video at once. Optional spatial tiling (`tiled=True`) bounds memory further: every tile goes through
its own full temporal pass (its causal cache stays exact) and the tiles are blended with linear ramps.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .vae_coder import Decoder, Encoder
from .vae_config import WAN21_LATENT_MEAN, WAN21_LATENT_STD, VAEConfig, infer_vae_config
from .vae_layers import TemporalCache
from .vae_tiling import map_tiles

__all__ = ["WAN21_LATENT_MEAN", "WAN21_LATENT_STD", "VAEConfig", "WanVAE", "infer_vae_config"]

DEFAULT_TILE = 64  # latent cells (512 pixels)
DEFAULT_OVERLAP = 8  # latent cells (64 pixels)


def _pair(tile: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(tile, int):
        return tile, tile
    tile = tuple(tile)
    if len(tile) != 2:
        raise ValueError(f"tile must be an int or (height, width) in latent cells; found {tile}")
    return tile


class WanVAE(nn.Module):
    """Wan2.1 VAE with the official parameter names (`encoder.*`, `conv1.*`, `conv2.*`, `decoder.*`).

    `latent_mean` / `latent_std` (z_dim values each; the released Wan2.1 statistics by default) normalise the
    encoder's mean: latent = (mu - mean) / std. They are not part of the state dict and stay float32.
    """

    def __init__(
        self,
        config: VAEConfig | None = None,
        latent_mean: Sequence[float] | None = None,
        latent_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config or VAEConfig()
        z_dim = config.z_dim
        self.encoder = Encoder(config)
        self.conv1 = nn.Conv3d(2 * z_dim, 2 * z_dim, 1)  # encoder output -> (mean, log-variance)
        self.conv2 = nn.Conv3d(z_dim, z_dim, 1)  # latent -> decoder input
        self.decoder = Decoder(config)
        self.set_latent_stats(WAN21_LATENT_MEAN if latent_mean is None else latent_mean,
                              WAN21_LATENT_STD if latent_std is None else latent_std)

    def set_latent_stats(self, latent_mean: Sequence[float], latent_std: Sequence[float]) -> None:
        """Replace the per-channel normalisation statistics (z_dim values each, std > 0)."""
        mean = tuple(float(v) for v in latent_mean)
        std = tuple(float(v) for v in latent_std)
        for name, values in (("latent_mean", mean), ("latent_std", std)):
            if len(values) != self.config.z_dim:
                raise ValueError(f"WanVAE {name} has {len(values)} values; expected z_dim = {self.config.z_dim}")
        if min(std) <= 0:
            raise ValueError(f"WanVAE latent_std must be positive; found {min(std)}")
        self.latent_mean, self.latent_std = mean, std

    @property
    def device(self) -> torch.device:
        return self.conv2.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    # ---- normalisation -------------------------------------------------------------------------------------------

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.latent_mean, dtype=torch.float32, device=like.device).view(shape)
        std = torch.tensor(self.latent_std, dtype=torch.float32, device=like.device).view(shape)
        return mean, std

    def normalize_latent(self, mu: torch.Tensor) -> torch.Tensor:
        """Encoder mean -> the latent the DiT works on: (mu - mean) / std, float32."""
        mean, std = self._stats(mu)
        return (mu.float() - mean) / std

    def denormalize_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize_latent`: latent * std + mean, float32."""
        mean, std = self._stats(latent)
        return latent.float() * std + mean

    # ---- public API ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(
        self,
        video: torch.Tensor,
        tiled: bool = False,
        tile: int | Sequence[int] = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
    ) -> torch.Tensor:
        """Video [B, 3, F, H, W] in [-1, 1], F = 4k+1, H and W multiples of 8 -> normalised latent
        [B, z_dim, 1 + (F-1)/4, H/8, W/8], float32, on the video's device (computed on the VAE's device).

        With `tiled`, the video is coded in overlapping spatial tiles of at most `tile` x `tile` latent cells (8 px
        each; shrunk where the same number of smaller tiles covers the frame) overlapping by at least `overlap`
        cells, blended linearly.
        """
        self._check_video(video)
        stride = self.config.spatial_stride
        if tiled:
            grid = (video.shape[3] // stride, video.shape[4] // stride)
            mu = map_tiles(self._encode_mean, video, grid, stride, 1, _pair(tile), overlap)
        else:
            mu = self._encode_mean(video)
        return self.normalize_latent(mu)

    @torch.no_grad()
    def decode(
        self,
        latent: torch.Tensor,
        tiled: bool = False,
        tile: int | Sequence[int] = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
    ) -> torch.Tensor:
        """Normalised latent [B, z_dim, T, h, w] -> video [B, 3, 1 + 4(T-1), 8h, 8w] clamped to [-1, 1], float32, on
        the latent's device. `tiled`, `tile`, `overlap` as for `encode` (in latent cells)."""
        self._check_latent(latent)
        z = self.denormalize_latent(latent)
        stride = self.config.spatial_stride
        if tiled:
            video = map_tiles(self._decode_frames, z, tuple(z.shape[3:]), 1, stride, _pair(tile), overlap)
        else:
            video = self._decode_frames(z)
        return video.clamp_(-1.0, 1.0)

    # ---- chunked coding ------------------------------------------------------------------------------------------

    def _encode_mean(self, video: torch.Tensor) -> torch.Tensor:
        """Un-normalised encoder mean of `video`, one latent frame per chunk (1 frame, then 4, 4, ...)."""
        batch, _, frames, height, width = video.shape
        step, stride, z_dim = self.config.temporal_stride, self.config.spatial_stride, self.config.z_dim
        latent_frames = 1 + (frames - 1) // step
        out = torch.empty(batch, z_dim, latent_frames, height // stride, width // stride,
                          dtype=torch.float32, device=video.device)
        mean_weight, mean_bias = self.conv1.weight[:z_dim], self.conv1.bias[:z_dim]
        cache = TemporalCache()
        for index in range(latent_frames):
            start = 0 if index == 0 else 1 + (index - 1) * step
            chunk = video[:, :, start:1 + index * step].to(device=self.device, dtype=self.dtype)
            features = self.encoder(chunk, cache)  # [B, 2*z_dim, 1, h, w]
            out[:, :, index:index + 1] = F.conv3d(features, mean_weight, mean_bias).to(out.device, torch.float32)
            del chunk, features
        return out

    def _decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        """Decode an un-normalised latent one latent frame at a time; unclamped float32 video on z's device."""
        batch, _, latent_frames, height, width = z.shape
        step, stride = self.config.temporal_stride, self.config.spatial_stride
        out = torch.empty(batch, 3, 1 + step * (latent_frames - 1), height * stride, width * stride,
                          dtype=torch.float32, device=z.device)
        cache = TemporalCache()
        for index in range(latent_frames):
            x = self.conv2(z[:, :, index:index + 1].to(device=self.device, dtype=self.dtype))
            frames = self.decoder(x, cache)  # [B, 3, 1 or 4, H, W]
            start = 0 if index == 0 else 1 + (index - 1) * step
            out[:, :, start:start + frames.shape[2]] = frames.to(out.device, torch.float32)
            del x, frames
        return out

    # ---- input checks --------------------------------------------------------------------------------------------

    def _check_video(self, video: torch.Tensor) -> None:
        layout = "[B, 3, F, H, W]"
        if not isinstance(video, torch.Tensor):
            raise TypeError(f"video must be a torch.Tensor {layout}; found {type(video).__name__}")
        if video.ndim != 5:
            raise ValueError(f"video must have 5 dims {layout}; found {video.ndim} dims, shape {tuple(video.shape)}")
        if not video.is_floating_point():
            raise ValueError(f"video must be a float tensor with values in [-1, 1]; found dtype {video.dtype}")
        _, channels, frames, height, width = video.shape
        if channels != 3:
            raise ValueError(f"video must have 3 channels (dim 1 of {layout}); found {channels}, "
                             f"shape {tuple(video.shape)}")
        step, stride = self.config.temporal_stride, self.config.spatial_stride
        if frames < 1 or (frames - 1) % step:
            raise ValueError(f"video has {frames} frames; the VAE needs {step}k+1 frames (1, {1 + step}, "
                             f"{1 + 2 * step}, ...)")
        if height % stride or width % stride or height == 0 or width == 0:
            raise ValueError(f"video size {height}x{width} (HxW): both must be positive multiples of {stride}")

    def _check_latent(self, latent: torch.Tensor) -> None:
        layout = f"[B, {self.config.z_dim}, T, h, w]"
        if not isinstance(latent, torch.Tensor):
            raise TypeError(f"latent must be a torch.Tensor {layout}; found {type(latent).__name__}")
        if latent.ndim != 5:
            raise ValueError(f"latent must have 5 dims {layout}; found {latent.ndim} dims, "
                             f"shape {tuple(latent.shape)}")
        if not latent.is_floating_point():
            raise ValueError(f"latent must be a float tensor; found dtype {latent.dtype}")
        if latent.shape[1] != self.config.z_dim:
            raise ValueError(f"latent must have {self.config.z_dim} channels (dim 1 of {layout}); found "
                             f"{latent.shape[1]}, shape {tuple(latent.shape)}")
        if min(latent.shape[2:]) < 1:
            raise ValueError(f"latent has an empty dimension: shape {tuple(latent.shape)}")
