"""Face motion encoder of Wan-Animate: a StyleGAN-style image encoder (LIA) mapping face crops to motion vectors.

Parameter names follow the official checkpoint (`motion_encoder.enc.net_app.convs.*`, `enc.fc.*`,
`dec.direction.weight`). Convolutions use "equalised learning rate" weights (multiplied by 1/sqrt(fan_in) at use).
The network computes in the dtype of its input (the DiT's compute dtype); the orthogonal motion basis is applied in
float32.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

OFFICIAL_CHANNELS = (32, 64, 128, 256, 512, 512, 512, 512)  # convs.0 output, then each ResBlock's output (512 px)
LEAKY_SLOPE = 0.2
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


class EqualConv2d(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1.0 / math.sqrt(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class BiasLeakyReLU(nn.Module):
    """leaky_relu(x + bias, 0.2) * sqrt(2); the bias is stored as [1, C, 1, 1]."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias, LEAKY_SLOPE) * math.sqrt(2.0)


def blur_kernel() -> torch.Tensor:
    """The normalised 2-D [1, 3, 3, 1] x [1, 3, 3, 1] blur kernel [4, 4] (a constant buffer of every Blur)."""
    taps = torch.tensor(BLUR_TAPS)
    kernel = torch.outer(taps, taps)
    return kernel / kernel.sum()


class Blur(nn.Module):
    """Separable [1, 3, 3, 1] low-pass filter (normalised) with asymmetric zero padding, per channel."""

    def __init__(self, pad: tuple[int, int]):
        super().__init__()
        self.register_buffer("kernel", blur_kernel())
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        before, after = self.pad
        x = F.pad(x, (before, after, before, after))
        weight = self.kernel.flip(0, 1).to(x.dtype).expand(channels, 1, *self.kernel.shape).contiguous()
        return F.conv2d(x, weight, groups=channels)


class ConvLayer(nn.Sequential):
    """[Blur] + EqualConv2d (+ bias-leaky-ReLU); indices match the official `convs.N.M` names."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, downsample: bool = False, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            total = len(BLUR_TAPS) - 2 + kernel - 1
            layers.append(Blur(((total + 1) // 2, total // 2)))
            layers.append(EqualConv2d(in_ch, out_ch, kernel, stride=2, padding=0, bias=False))
        else:
            layers.append(EqualConv2d(in_ch, out_ch, kernel, stride=1, padding=kernel // 2, bias=False))
        if activate:
            layers.append(BiasLeakyReLU(out_ch))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Two 3x3 convs (the second downsampling) plus a downsampling 1x1 skip, averaged with 1/sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


class AppearanceEncoder(nn.Module):
    """Image [N, 3, S, S] -> [N, style_dim] through ResBlocks halving the size down to 4x4 and a 4x4 conv."""

    def __init__(self, channels: tuple[int, ...], style_dim: int):
        super().__init__()
        self.convs = nn.ModuleList([ConvLayer(3, channels[0], 1)])
        for in_ch, out_ch in zip(channels[:-1], channels[1:]):
            self.convs.append(ResBlock(in_ch, out_ch))
        self.convs.append(EqualConv2d(channels[-1], style_dim, 4, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return x.flatten(1)  # [N, style_dim, 1, 1] -> [N, style_dim]


class Encoder(nn.Module):
    def __init__(self, channels: tuple[int, ...], style_dim: int, motion_dim: int):
        super().__init__()
        self.net_app = AppearanceEncoder(channels, style_dim)
        self.fc = nn.Sequential(*[EqualLinear(style_dim, style_dim) for _ in range(4)],
                                EqualLinear(style_dim, motion_dim))

    def motion_coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> [N, motion_dim]."""
        return self.fc(self.net_app(x))


class Direction(nn.Module):
    """Learned motion basis [style_dim, motion_dim], orthonormalised by QR at use."""

    def __init__(self, style_dim: int, motion_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(style_dim, motion_dim))

    def forward(self, coefficients: torch.Tensor) -> torch.Tensor:
        """[N, motion_dim] -> [N, style_dim] = coefficients @ Q^T, in float32."""
        shifted = self.weight + 1e-8
        basis = torch.linalg.qr(shifted.float()).Q.to(shifted.dtype).float()  # [style_dim, motion_dim]
        return coefficients.float() @ basis.T


class Synthesis(nn.Module):
    def __init__(self, style_dim: int, motion_dim: int):
        super().__init__()
        self.direction = Direction(style_dim, motion_dim)


class MotionEncoder(nn.Module):
    """Official `motion_encoder` (Generator): face crops in [-1, 1] -> motion vectors [N, style_dim] (float32)."""

    def __init__(self, channels: tuple[int, ...] = OFFICIAL_CHANNELS, style_dim: int = 512, motion_dim: int = 20):
        super().__init__()
        self.input_size = 2 ** (len(channels) + 1)
        self.enc = Encoder(channels, style_dim, motion_dim)
        self.dec = Synthesis(style_dim, motion_dim)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """faces [N, 3, S, S] in the compute dtype -> [N, style_dim] float32."""
        return self.dec.direction(self.enc.motion_coefficients(faces))
