"""Encoder and decoder stacks of the Wan2.1 causal video VAE (official module names: conv1, downsamples / upsamples,
middle, head)."""
from __future__ import annotations

import torch
from torch import nn

from .vae_config import VAEConfig
from .vae_layers import (
    AttentionBlock,
    CausalConv3d,
    Downsample,
    ResidualBlock,
    RMSNorm,
    TemporalCache,
    Upsample,
)


def _middle(width: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(width, width), AttentionBlock(width), ResidualBlock(width, width))


def _head(width: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(RMSNorm(width, spatial_dims=3), nn.SiLU(inplace=True),
                         CausalConv3d(width, out_channels, 3, padding=1))


def _run(blocks: nn.Sequential, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
    for block in blocks:
        x = block(x, cache)
    return x


class Encoder(nn.Module):
    """Video [B, 3, T, H, W] -> 2 * z_dim channels (mean and log-variance) at 1/8 size, time downsampled."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths = [config.dim * m for m in (1, *config.dim_mult)]
        self.conv1 = CausalConv3d(3, widths[0], 3, padding=1)
        blocks: list[nn.Module] = []
        scale = 1.0
        for stage, out_dim in enumerate(widths[1:]):
            in_dim = widths[stage]
            for _ in range(config.num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim))
                if scale in config.attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if stage < len(config.dim_mult) - 1:
                blocks.append(Downsample(out_dim, temporal=config.temperal_downsample[stage]))
                scale /= 2
        self.downsamples = nn.Sequential(*blocks)
        self.middle = _middle(widths[-1])
        self.head = _head(widths[-1], 2 * config.z_dim)

    def forward(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        x = self.conv1(x, cache)
        x = _run(self.downsamples, x, cache)
        x = _run(self.middle, x, cache)
        norm, act, conv = self.head
        return conv(act(norm(x)), cache)


class Decoder(nn.Module):
    """Latent [B, z_dim, T, h, w] -> video [B, 3, T', 8h, 8w], mirroring the encoder (time upsampled causally)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        mults = config.dim_mult
        widths = [config.dim * m for m in (mults[-1], *mults[::-1])]
        temporal = config.temperal_downsample[::-1]
        self.conv1 = CausalConv3d(config.z_dim, widths[0], 3, padding=1)
        self.middle = _middle(widths[0])
        blocks: list[nn.Module] = []
        scale = 1.0 / 2 ** (len(mults) - 2)
        for stage, out_dim in enumerate(widths[1:]):
            # every upsample halves the channels it outputs
            in_dim = widths[stage] if stage == 0 else widths[stage] // 2
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResidualBlock(in_dim, out_dim))
                if scale in config.attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if stage < len(mults) - 1:
                blocks.append(Upsample(out_dim, temporal=temporal[stage]))
                scale *= 2
        self.upsamples = nn.Sequential(*blocks)
        self.head = _head(widths[-1], 3)

    def forward(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        x = self.conv1(x, cache)
        x = _run(self.middle, x, cache)
        x = _run(self.upsamples, x, cache)
        norm, act, conv = self.head
        return conv(act(norm(x)), cache)
