"""Building blocks of the Wan2.1 causal video VAE.

Every block takes `(x, cache)`: `x` is one temporal chunk [B, C, T, H, W] of the video being coded and `cache` carries,
per causal layer, the frames that layer still needs from earlier chunks. Running a video chunk by chunk through the
same cache gives exactly the result of running it in one piece with causal (left, zero) time padding, while only one
chunk of activations is alive at a time. Module and parameter names follow the official checkpoint layout.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalCache:
    """Frames each causal layer keeps from the previous chunk, plus which layers have already seen a chunk."""

    def __init__(self) -> None:
        self._kept: dict[nn.Module, torch.Tensor] = {}
        self._visited: set[nn.Module] = set()

    def take(self, layer: nn.Module) -> torch.Tensor | None:
        """The frames `layer` stored after the previous chunk (None before its first chunk); the entry is released."""
        return self._kept.pop(layer, None)

    def put(self, layer: nn.Module, frames: torch.Tensor) -> None:
        self._kept[layer] = frames

    def first_visit(self, layer: nn.Module) -> bool:
        """True the first time `layer` asks, False afterwards."""
        if layer in self._visited:
            return False
        self._visited.add(layer)
        return True


def _per_frame(fn, frames: list[torch.Tensor]) -> torch.Tensor:
    """Apply a 2D module to each frame [B, C, H, W] (views into a video), stacking the results in time.

    Frame by frame keeps the 2D module's temporaries (padding, upsampling) to one frame's size and writes straight
    into the contiguous output [B, C', T, H', W'].
    """
    out = None
    for index, frame in enumerate(frames):
        y = fn(frame)
        if out is None:
            out = y.new_empty(y.shape[0], y.shape[1], len(frames), *y.shape[2:])
        out[:, :, index] = y
        del y
    return out


def _frames(x: torch.Tensor) -> list[torch.Tensor]:
    return list(x.unbind(2))


class CausalConv3d(nn.Conv3d):
    """3D convolution that only looks back in time: spatial zero padding on both sides, time padding on the left.

    The left time context is `2 * padding[0]` frames: zeros before the first chunk, then the last frames of the
    previous chunk's (padded) input, kept in the cache.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, padding=0, stride=1) -> None:
        pad_t, pad_h, pad_w = (padding,) * 3 if isinstance(padding, int) else padding
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=(0, pad_h, pad_w))
        self.time_context = 2 * pad_t

    def forward(self, x: torch.Tensor, cache: TemporalCache | None = None) -> torch.Tensor:
        if self.time_context:
            previous = cache.take(self) if cache is not None else None
            if previous is None:
                b, c, _, h, w = x.shape
                previous = x.new_zeros(b, c, self.time_context, h, w)
            x = torch.cat([previous, x], dim=2)
            if cache is not None:
                cache.put(self, x[:, :, -self.time_context:].clone())
        if self._prefers_onednn(x):
            return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                                            self.groups)
        return super().forward(x)

    def _prefers_onednn(self, x: torch.Tensor) -> bool:
        """Whether to call oneDNN directly rather than through PyTorch's choice of CPU kernel.

        For float32 on the CPU, PyTorch sends a convolution whose N*C*T*H is at most 20480 (a rule made for 2-D
        images) to its native kernel, which on this VAE's spatial 3x3x3 convolutions over >= 16 channels is
        1.1-2.8x slower than oneDNN (one thread, e.g. 96 channels x 3 frames at 48x80: 58 ms vs 21 ms). The
        official VAE pads before convolving, so its larger H can cross the rule's bound where ours does not.
        Time-only (3x1x1) kernels and the 3-channel input convolution are as fast or faster natively.
        """
        return (x.device.type == "cpu" and x.dtype == torch.float32 and self.in_channels >= 16
                and self.kernel_size[1:] != (1, 1) and torch.backends.mkldnn.is_available()
                and torch.backends.mkldnn.enabled)


class RMSNorm(nn.Module):
    """Normalise over channels to unit RMS, then scale per channel by `gamma`."""

    def __init__(self, dim: int, spatial_dims: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *([1] * spatial_dims)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(1e-12)  # as F.normalize
        return (x / norm).mul_(self.scale * self.gamma)


class ResidualBlock(nn.Module):
    """norm-SiLU-conv twice, plus a 1x1x1 projection of the input when the width changes."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim, spatial_dims=3),
            nn.SiLU(inplace=True),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, spatial_dims=3),
            nn.SiLU(inplace=True),
            nn.Identity(),  # the training-time dropout slot; keeps the second conv at `residual.6`
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = nn.Conv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        norm1, act1, conv1, norm2, act2, _, conv2 = self.residual
        y = conv1(act1(norm1(x)), cache)
        y = conv2(act2(norm2(y)), cache)
        return y.add_(self.shortcut(x))


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no attention across time)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, spatial_dims=2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: TemporalCache | None = None) -> torch.Tensor:
        return _per_frame(self._attend, _frames(x)).add_(x)

    def _attend(self, frames: torch.Tensor) -> torch.Tensor:
        n, c, h, w = frames.shape
        qkv = self.to_qkv(self.norm(frames)).reshape(n, 3, c, h * w).transpose(2, 3)  # [N, 3, HW, C]
        q, k, v = qkv.unsqueeze(2).unbind(1)  # each [N, 1, HW, C]
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.squeeze(1).transpose(1, 2).reshape(n, c, h, w)
        return self.proj(out)


class Downsample(nn.Module):
    """Halve height and width; with `temporal`, also halve time (the very first frame passes through alone)."""

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        x = _per_frame(self.resample, _frames(x))
        if self.time_conv is None:
            return x
        previous = cache.take(self)
        cache.put(self, x[:, :, -1:].clone())
        if previous is None:
            return x
        # windows (f0, f1, f2), (f2, f3, f4), ... continue across chunks through the cached last frame
        return self.time_conv(torch.cat([previous, x], dim=2))


class Upsample(nn.Module):
    """Double height and width (halving the channels); with `temporal`, also double time except for the first frame.

    The temporal part predicts two frames per input frame from a causal time convolution whose 2*dim outputs hold
    the earlier frame's channels first. The very first frame of a video is not doubled.
    """

    def __init__(self, dim: int, temporal: bool) -> None:
        super().__init__()
        self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                      nn.Conv2d(dim, dim // 2, 3, padding=1))
        self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0)) if temporal else None

    def forward(self, x: torch.Tensor, cache: TemporalCache) -> torch.Tensor:
        if self.time_conv is None or cache.first_visit(self):
            return _per_frame(self.resample, _frames(x))
        channels = x.shape[1]
        pairs = self.time_conv(x, cache)  # [B, 2C, T, H, W]: step i gives frame 2i (first C) and 2i+1 (last C)
        frames = [half for step in pairs.unbind(2) for half in (step[:, :channels], step[:, channels:])]
        return _per_frame(self.resample, frames)
