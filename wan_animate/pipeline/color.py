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
