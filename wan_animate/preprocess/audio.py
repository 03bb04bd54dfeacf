"""The driving video's sound, cut to the frames that were generated from it."""
from __future__ import annotations

import math
from typing import TypeVar

Waveform = TypeVar("Waveform")  # an array or tensor whose last axis is the samples: [..., S]


def audio_samples_for_frames(frame_count: int, fps: float, sample_rate: int) -> int:
    """Samples that last as long as `frame_count` frames at `fps` (rounded up, as ComfyUI's video writer does)."""
    if frame_count < 0 or fps <= 0 or sample_rate <= 0:
        raise ValueError(f"expected frames >= 0, fps > 0 and sample rate > 0; got {frame_count}, {fps}, {sample_rate}")
    return math.ceil(frame_count * sample_rate / fps - 1e-9)


def trim_waveform(waveform: Waveform, sample_rate: int, frame_count: int, fps: float) -> Waveform:
    """`waveform` [..., S] cut to the length of `frame_count` frames at `fps`, both starting at time 0 (a shorter
    waveform is returned whole)."""
    return waveform[..., :audio_samples_for_frames(frame_count, fps, sample_rate)]
