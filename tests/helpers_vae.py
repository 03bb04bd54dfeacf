"""Tiny random Wan2.1 VAEs for the tests, and a whole-sequence reference of its causal time handling.

The reference codes a video in one piece (no chunks, no cache): causal convolutions get their full left zero padding,
a temporal downsample keeps frame 0 and runs its stride-2 convolution over the whole sequence, a temporal upsample
keeps frame 0 and doubles every later frame. The chunked implementation must give the same numbers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wan_animate.model.vae import WanVAE
from wan_animate.model.vae_config import VAEConfig
from wan_animate.model.vae_layers import AttentionBlock, CausalConv3d, Downsample, ResidualBlock, Upsample

TINY = VAEConfig(dim=8, z_dim=16, dim_mult=(1, 2, 2, 2), num_res_blocks=1, attn_scales=(),
                 temperal_downsample=(False, True, True))
TINY_ATTN = VAEConfig(dim=4, z_dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=2, attn_scales=(1.0, 0.5),
                      temperal_downsample=(True, False, True))


def random_vae(config: VAEConfig = TINY, seed: int = 0) -> WanVAE:
    """A float32 eval-mode VAE with random weights (RMS norm gains drawn around 1 so they matter)."""
    torch.manual_seed(seed)
    mean = std = None
    if config.z_dim != 16:
        mean = torch.linspace(-0.5, 0.5, config.z_dim).tolist()
        std = torch.linspace(0.8, 1.6, config.z_dim).tolist()
    vae = WanVAE(config, latent_mean=mean, latent_std=std)
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if name.endswith("gamma"):
                param.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                param.uniform_(-0.1, 0.1)
    return vae.eval().requires_grad_(False)


def random_video(frames: int, height: int, width: int, seed: int = 1, batch: int = 1) -> torch.Tensor:
    """A smooth-ish random video [B, 3, F, H, W] in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, frames, max(1, height // 4), max(1, width // 4), generator=generator)
    video = F.interpolate(coarse, size=(frames, height, width), mode="trilinear", align_corners=False)
    return video * 2 - 1


# ---- whole-sequence reference ----------------------------------------------------------------------------------------

def _causal(conv: CausalConv3d, x: torch.Tensor) -> torch.Tensor:
    """The causal convolution over a whole sequence: all its left time context is zeros."""
    return nn.Conv3d.forward(conv, F.pad(x, (0, 0, 0, 0, conv.time_context, 0)))


def _frames2d(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = x.shape
    y = module(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
    return y.reshape(b, t, *y.shape[1:]).permute(0, 2, 1, 3, 4)


def _block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(block, ResidualBlock):
        r = block.residual
        y = _causal(r[2], F.silu(r[0](x)))
        y = _causal(r[6], F.silu(r[3](y)))
        return y + block.shortcut(x)
    if isinstance(block, AttentionBlock):
        return block(x)
    if isinstance(block, Downsample):
        x = _frames2d(block.resample, x)
        if block.time_conv is None or x.shape[2] == 1:
            return x
        return torch.cat([x[:, :, :1], block.time_conv(x)], dim=2)
    if isinstance(block, Upsample):
        if block.time_conv is not None and x.shape[2] > 1:
            first, rest = x[:, :, :1], x[:, :, 1:]
            b, c, t, h, w = rest.shape
            pairs = _causal(block.time_conv, rest).reshape(b, 2, c, t, h, w)
            doubled = torch.stack([pairs[:, 0], pairs[:, 1]], dim=3).reshape(b, c, 2 * t, h, w)
            x = torch.cat([first, doubled], dim=2)
        return _frames2d(block.resample, x)
    raise TypeError(type(block))


def _head(head: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    return _causal(head[2], F.silu(head[0](x)))


@torch.no_grad()
def reference_encode(vae: WanVAE, video: torch.Tensor) -> torch.Tensor:
    enc = vae.encoder
    x = _causal(enc.conv1, video)
    for block in [*enc.downsamples, *enc.middle]:
        x = _block(block, x)
    mu = vae.conv1(_head(enc.head, x))[:, : vae.config.z_dim]
    return vae.normalize_latent(mu)


@torch.no_grad()
def reference_decode(vae: WanVAE, latent: torch.Tensor) -> torch.Tensor:
    dec = vae.decoder
    x = _causal(dec.conv1, vae.conv2(vae.denormalize_latent(latent)))
    for block in [*dec.middle, *dec.upsamples]:
        x = _block(block, x)
    return _head(dec.head, x).clamp(-1, 1)
