"""Continuing a job from an earlier result: which driving frames the continuation covers and what guides it.

A continuation makes the frames from `frame_offset` on. With `start_frames` (the earlier result, whose last frame is
frame_offset - 1) its first segment starts refert_num frames earlier and is guided by the last refert_num start
frames, exactly like the segment that follows them in a whole job; without them it starts fresh at frame_offset.
When frame_offset - refert_num is a multiple of clip_len - refert_num (a segment boundary of the whole job), the
continuation's segments are the whole job's, and so is the seeded noise (segment numbers count from the whole job's).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .generate import AnimateInputs

DRIVING_FIELDS = ("pose", "face", "background", "person_mask")


def continuation_begin(frame_offset: int, refert_num: int, guided: bool, frames: int) -> int:
    """First driving frame the continuation's segments cover; ValueError when the offset does not fit."""
    if not 0 <= frame_offset < frames:
        raise ValueError(f"frame_offset is {frame_offset}; expected 0 to {frames - 1} (the driving video has "
                         f"{frames} frames)")
    if not guided:
        return frame_offset
    if frame_offset < refert_num:
        raise ValueError(f"frame_offset is {frame_offset}; continuing from start_frames needs at least the "
                         f"{refert_num} guide frames before it")
    return frame_offset - refert_num


def first_segment_number(begin: int, clip_len: int, refert_num: int) -> int:
    """The whole job's number of the segment starting at driving frame `begin` (rounded down off a boundary)."""
    return begin // (clip_len - refert_num)


def driving_from(inputs: "AnimateInputs", begin: int) -> "AnimateInputs":
    """The inputs with the per-frame videos (pose, face, background, mask) starting at frame `begin`."""
    if begin == 0:
        return inputs
    changes = {name: getattr(inputs, name)[begin:] for name in DRIVING_FIELDS if getattr(inputs, name) is not None}
    return dataclasses.replace(inputs, **changes)


def guide_from_start_frames(start_frames: torch.Tensor, refert_num: int, height: int, width: int) -> torch.Tensor:
    """The last refert_num frames of start_frames [n, H, W, 3] (IMAGE 0..1 or uint8) -> [3, refert_num, H, W] in
    [-1, 1], the guide of the continuation's first segment."""
    if start_frames.ndim != 4 or start_frames.shape[-1] != 3 or tuple(start_frames.shape[1:3]) != (height, width):
        raise ValueError(f"start_frames has shape {tuple(start_frames.shape)}; expected [n, {height}, {width}, 3] "
                         "(frames of an earlier result at the same size)")
    if start_frames.shape[0] < refert_num:
        raise ValueError(f"start_frames has {start_frames.shape[0]} frames; guide_frames {refert_num} needs at least "
                         f"{refert_num}")
    tail = start_frames[-refert_num:]
    if tail.dtype == torch.uint8:
        tail = (tail.double() / 127.5 - 1).float()
    else:
        tail = tail.float() * 2 - 1
    return tail.permute(3, 0, 1, 2).contiguous().cpu()
