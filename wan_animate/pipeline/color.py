"""Colour drift between chained segments: measuring it and an optional correction.

Each segment after the first regenerates its guidance frames, which should look like the previous segment's last
frames. Long chains tend to drift in colour; the drift is measured as the difference of mean colour between those two
sets of frames, and corrected by matching each channel's mean and standard deviation of the new segment's guidance
frames to those of the previous segment's last frames, then applying that affine map to the whole new segment.
Videos here are [3, F, H, W] in [-1, 1].
"""
from __future__ import annotations

import torch

STD_FLOOR = 1e-4


def mean_colour(frames: torch.Tensor) -> torch.Tensor:
    """Mean of each channel over all frames and pixels: [3]."""
    return frames.float().mean(dim=(1, 2, 3))


def colour_drift(previous_tail: torch.Tensor, new_head: torch.Tensor) -> float:
    """Largest per-channel difference of mean colour between two sets of frames showing the same moment."""
    return (mean_colour(new_head) - mean_colour(previous_tail)).abs().max().item()


def match_colour(segment: torch.Tensor, new_head: torch.Tensor, previous_tail: torch.Tensor) -> torch.Tensor:
    """segment mapped per channel so that new_head's mean and std become previous_tail's; clamped to [-1, 1]."""
    dims = (1, 2, 3)
    head = new_head.float()
    tail = previous_tail.float()
    head_mean, tail_mean = head.mean(dim=dims), tail.mean(dim=dims)
    head_std = head.std(dim=dims).clamp_min(STD_FLOOR)
    tail_std = tail.std(dim=dims).clamp_min(STD_FLOOR)
    gain = (tail_std / head_std).view(3, 1, 1, 1)
    corrected = (segment.float() - head_mean.view(3, 1, 1, 1)) * gain + tail_mean.view(3, 1, 1, 1)
    return corrected.clamp(-1, 1).to(segment.dtype)


# ----- colour spaces and transfer methods (videos and pixel sets in [-1, 1]) -----

LAB_WHITE = (0.95047, 1.0, 1.08883)  # D65
_RGB_TO_XYZ = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                            [0.2126729, 0.7151522, 0.0721750],
                            [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)
_DELTA = 6 / 29
HISTOGRAM_LEVELS = 256
MAX_STAT_PIXELS = 1 << 20  # pixels per set used for statistics (evenly subsampled beyond this)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [-1, 1], channels first [3, ...] -> CIE Lab (D65) [3, ...] float64 (L 0..100)."""
    c = ((rgb.double() + 1) / 2).clamp(0, 1)
    linear = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = torch.einsum("ij,j...->i...", _RGB_TO_XYZ, linear)
    xyz = xyz / torch.tensor(LAB_WHITE, dtype=torch.float64).view(3, *([1] * (rgb.ndim - 1)))
    f = torch.where(xyz > _DELTA**3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * _DELTA**2) + 4 / 29)
    return torch.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab [3, ...] -> sRGB in [-1, 1] [3, ...] float32 (out-of-gamut colours clamped)."""
    fy = (lab[0].double() + 16) / 116
    f = torch.stack([fy + lab[1] / 500, fy, fy - lab[2] / 200])
    xyz = torch.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4 / 29))
    xyz = xyz * torch.tensor(LAB_WHITE, dtype=torch.float64).view(3, *([1] * (lab.ndim - 1)))
    linear = torch.einsum("ij,j...->i...", torch.linalg.inv(_RGB_TO_XYZ), xyz).clamp(0, 1)
    c = torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return (c * 2 - 1).clamp(-1, 1).float()


def pixel_set(video: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Video [3, F, H, W] (or image [3, H, W]) -> its pixels [3, N], only where keep [F, H, W] is true; evenly
    subsampled to at most MAX_STAT_PIXELS."""
    pixels = video.float().reshape(3, -1)
    if keep is not None:
        pixels = pixels[:, keep.reshape(-1).to(pixels.device)]
    if pixels.shape[1] > MAX_STAT_PIXELS:
        pixels = pixels[:, torch.linspace(0, pixels.shape[1] - 1, MAX_STAT_PIXELS).long()]
    return pixels


def affine_match(values: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """values [3, ...] mapped per channel so that source [3, N]'s mean and std become target [3, M]'s."""
    shape = (3,) + (1,) * (values.ndim - 1)
    gain = target.std(dim=1).clamp_min(STD_FLOOR) / source.std(dim=1).clamp_min(STD_FLOOR)
    return (values - source.mean(dim=1).view(shape)) * gain.view(shape) + target.mean(dim=1).view(shape)


def match_mean_std_lab(segment: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Like `match_colour` but in Lab: segment [3, F, H, W] mapped so that source pixels [3, N] get the mean and std
    of target pixels [3, M] in each Lab channel."""
    lab = affine_match(rgb_to_lab(segment), rgb_to_lab(source), rgb_to_lab(target))
    return lab_to_rgb(lab).to(segment.dtype)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of (xp ascending, fp) at x, constant beyond the ends (numpy.interp)."""
    index = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[index - 1], xp[index], fp[index - 1], fp[index]
    weight = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return f0 + weight * (f1 - f0)


def match_histogram(segment: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """segment [3, F, H, W] mapped per RGB channel so that the source pixels' [3, N] distribution becomes the target
    pixels' [3, M] (quantile mapping over HISTOGRAM_LEVELS levels)."""
    levels = torch.linspace(0, 1, HISTOGRAM_LEVELS)
    out = torch.empty_like(segment, dtype=torch.float32)
    for c in range(3):
        src_q = torch.quantile(source[c].float(), levels)
        tgt_q = torch.quantile(target[c].float(), levels)
        src_q = src_q + torch.arange(HISTOGRAM_LEVELS) * 1e-7  # strictly ascending for the interpolation
        out[c] = _interp(segment[c].float().reshape(-1), src_q, tgt_q).reshape(segment.shape[1:])
    return out.clamp(-1, 1).to(segment.dtype)


def set_drift(source: torch.Tensor, target: torch.Tensor) -> float:
    """Largest per-channel difference of mean colour between two pixel sets [3, N], [3, M]."""
    return (source.float().mean(dim=1) - target.float().mean(dim=1)).abs().max().item()
