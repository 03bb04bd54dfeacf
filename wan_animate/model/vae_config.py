"""Configuration of the Wan2.1 video VAE, its released latent statistics, and inference of both from a state dict."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

# Per-channel statistics of the released Wan2.1 VAE latents: the DiT sees (mu - mean) / std.
WAN21_LATENT_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENT_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)

WAN22_VAE_Z_DIM = 48


@dataclass(frozen=True)
class VAEConfig:
    """Shape of a Wan2.1-style causal video VAE (the released one is the default).

    `dim_mult[i] * dim` is the width of encoder stage i; a spatial 2x downsample follows every stage but the last,
    and `temperal_downsample[i]` says whether that downsample also halves time (the decoder mirrors it).
    `attn_scales` lists the resolution scales (1, 1/2, 1/4, ...) whose stages carry self-attention blocks.
    """

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)

    def __post_init__(self) -> None:
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"VAEConfig.temperal_downsample has {len(self.temperal_downsample)} entries; "
                f"expected one per downsample, len(dim_mult) - 1 = {len(self.dim_mult) - 1}"
            )

    @property
    def temporal_stride(self) -> int:
        return 2 ** sum(self.temperal_downsample)

    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)


_DOWN_BLOCK = re.compile(r"^encoder\.downsamples\.(\d+)\.")


def infer_vae_config(state_dict: dict[str, torch.Tensor]) -> VAEConfig:
    """Read the VAE's configuration from the shapes of its official-layout state dict.

    The encoder's `downsamples` list is walked in order: residual blocks give the stage widths and the block count,
    attention blocks the attention scales, resample blocks the stage boundaries (with `time_conv` when they also
    downsample time).
    """
    for key in ("encoder.conv1.weight", "conv2.weight"):
        if key not in state_dict:
            raise ValueError(f"VAE state dict has no '{key}'; this is not a Wan VAE in the official key layout")
    z_dim = state_dict["conv2.weight"].shape[0]
    if z_dim == WAN22_VAE_Z_DIM or "decoder.upsamples.0.upsamples.0.residual.2.weight" in state_dict:
        raise ValueError(
            f"this VAE has z_dim {z_dim}: it is the Wan2.2 TI2V VAE (48 latent channels), not the Wan2.1 VAE "
            "(16 latent channels, `wan_2.1_vae.safetensors` / `Wan2.1_VAE.pth`) that Wan2.2-Animate needs"
        )
    dim = state_dict["encoder.conv1.weight"].shape[0]

    indices = sorted({int(m.group(1)) for key in state_dict if (m := _DOWN_BLOCK.match(key))})
    stage_widths: list[int] = []
    blocks_per_stage: list[int] = []
    temporal: list[bool] = []
    attn_scales: list[float] = []
    width, blocks, scale = None, 0, 1.0
    for index in indices:
        prefix = f"encoder.downsamples.{index}."
        if prefix + "residual.2.weight" in state_dict:
            width = state_dict[prefix + "residual.2.weight"].shape[0]
            blocks += 1
        elif prefix + "to_qkv.weight" in state_dict:
            if scale not in attn_scales:
                attn_scales.append(scale)
        elif prefix + "resample.1.weight" in state_dict:
            stage_widths.append(width)
            blocks_per_stage.append(blocks)
            temporal.append(prefix + "time_conv.weight" in state_dict)
            blocks, scale = 0, scale / 2
        else:
            raise ValueError(f"VAE state dict: cannot tell what block '{prefix}*' is")
    stage_widths.append(width)
    blocks_per_stage.append(blocks)

    if width is None or len(set(blocks_per_stage)) != 1:
        raise ValueError(f"VAE state dict: encoder stages have residual block counts {blocks_per_stage}; expected equal")
    if any(w % dim for w in stage_widths):
        raise ValueError(f"VAE state dict: stage widths {stage_widths} are not multiples of the base width {dim}")
    return VAEConfig(
        dim=dim,
        z_dim=z_dim,
        dim_mult=tuple(w // dim for w in stage_widths),
        num_res_blocks=blocks_per_stage[0],
        attn_scales=tuple(attn_scales),
        temperal_downsample=tuple(temporal),
    )
