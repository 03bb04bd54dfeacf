"""Segment planning for long videos: padding the driving frames so the segments tile them, and what each keeps.

A segment covers `clip_len` driving frames. Consecutive segments overlap by `refert_num` frames: segment k > 0 starts
`clip_len - refert_num` frames after segment k-1, its first `refert_num` frames are conditioned on the last
`refert_num` decoded frames of segment k-1 (temporal guidance) and are dropped from its output. The driving frames
are padded by walking back and forth over them (0, 1, ..., F-1, F-2, ..., 0, 1, ...) until the segments tile them;
the assembled output is trimmed to the real length.
"""
from __future__ import annotations

from dataclasses import dataclass

GUIDE_FRAME_CHOICES = (1, 5)


@dataclass(frozen=True)
class Segment:
    """One segment of the plan.

    index: position in the chain. start: first padded-frame position it covers. sources: for each of its clip_len
    frames, the index of the real input frame used there. guide_frames: leading frames conditioned on the previous
    segment's output (0 for the first segment); they are dropped from this segment's output.
    """

    index: int
    start: int
    sources: tuple[int, ...]
    guide_frames: int

    @property
    def kept_frames(self) -> int:
        return len(self.sources) - self.guide_frames


def check_segment_settings(clip_len: int, refert_num: int) -> None:
    """Raise ValueError unless clip_len is 4k+1 (k >= 1) and refert_num is 1 or 5 and smaller than clip_len."""
    if clip_len < 5 or (clip_len - 1) % 4 != 0:
        raise ValueError(f"clip_len is {clip_len}; expected 4k+1 frames with k >= 1 (5, 9, ..., 77, 81)")
    if refert_num not in GUIDE_FRAME_CHOICES:
        raise ValueError(f"refert_num is {refert_num}; expected one of {GUIDE_FRAME_CHOICES}")
    if refert_num >= clip_len:
        raise ValueError(f"refert_num ({refert_num}) must be smaller than clip_len ({clip_len})")


def padded_length(real_len: int, clip_len: int, refert_num: int) -> int:
    """Smallest length >= real_len (and >= clip_len) that segments of clip_len frames overlapping by refert_num tile.

    For real_len >= clip_len this is the official rule: real_len + the frames missing from the last segment.
    """
    check_segment_settings(clip_len, refert_num)
    if real_len < 1:
        raise ValueError(f"driving video has {real_len} frames; at least 1 is needed")
    if real_len <= clip_len:
        return clip_len
    stride = clip_len - refert_num
    remainder = (real_len - refert_num) % stride
    return real_len if remainder == 0 else real_len + stride - remainder


def padding_sources(real_len: int, target_len: int) -> list[int]:
    """Input frame index for each of target_len padded frames: 0, 1, ..., F-1, F-2, ..., 1, 0, 1, ... (F = real_len)."""
    if real_len < 1:
        raise ValueError(f"driving video has {real_len} frames; at least 1 is needed")
    if real_len == 1:
        return [0] * target_len
    period = 2 * (real_len - 1)
    sources = []
    for position in range(target_len):
        phase = position % period
        sources.append(phase if phase < real_len else period - phase)
    return sources


def plan_segments(real_len: int, clip_len: int, refert_num: int) -> list[Segment]:
    """The chain of segments covering real_len input frames (see the module docstring)."""
    target_len = padded_length(real_len, clip_len, refert_num)
    sources = padding_sources(real_len, target_len)
    stride = clip_len - refert_num
    count = 1 + (target_len - clip_len) // stride
    return [
        Segment(
            index=k,
            start=k * stride,
            sources=tuple(sources[k * stride : k * stride + clip_len]),
            guide_frames=0 if k == 0 else refert_num,
        )
        for k in range(count)
    ]


def latent_frames(clip_len: int) -> int:
    """Latent frames of a clip_len-frame segment (VAE time stride 4), without the reference slot."""
    return (clip_len - 1) // 4 + 1
