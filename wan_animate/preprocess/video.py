"""Frame-rate resampling and the official size policy for driving videos and character images.

The official preprocessing (Wan2.2 `process_pipepline.py` / `utils.py`) picks frames by timestamp for a target fps,
sizes everything to an area of about 1280x720 with sides divisible by 16, and fits images into that size with black
padding. These helpers reproduce those numbers exactly.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import cv2
import numpy as np

DEFAULT_AREA = 1280 * 720
SIZE_MULTIPLE = 16


def official_frame_count(frame_count: int, src_fps: float, duration_s: float | None) -> int:
    """The frame count the official reader trusts: the container's count unless it is more than 10% away from
    `duration * fps` (decord's count is unreliable for some files), then the duration-based one."""
    if duration_s is None or frame_count <= 0:
        return frame_count
    expected = int(duration_s * src_fps + 0.5)
    if abs(frame_count - expected) / frame_count > 0.1:
        return expected
    return frame_count


def frame_indices_for_fps(frame_count: int, src_fps: float, target_fps: float) -> list[int]:
    """Indices of the source frames shown at each tick of `target_fps` (-1 keeps the source rate).

    Output frame i is the source frame nearest to time i / target_fps (rounded half to even, as numpy rounds);
    the output lasts `int(frame_count / src_fps * target_fps)` frames.
    """
    if src_fps <= 0:
        raise ValueError(f"source fps must be positive; got {src_fps}")
    if target_fps == -1:
        target_fps = src_fps
    if target_fps <= 0:
        raise ValueError(f"target fps must be positive or -1 (keep the source rate); got {target_fps}")
    count = int(frame_count / src_fps * target_fps)
    times = np.arange(count) / target_fps
    indices = np.round(times * src_fps).astype(np.int64)
    return np.clip(indices, 0, max(frame_count - 1, 0)).tolist()


def check_generation_fps(fps) -> None:
    """Raise ValueError unless `fps` is a finite frame rate above 0, or -1 (keep the driving video's rate)."""
    finite = isinstance(fps, numbers.Real) and not isinstance(fps, bool) and math.isfinite(fps)
    if not finite or (fps <= 0 and fps != -1):
        shown = fps if isinstance(fps, numbers.Real) else repr(fps)
        raise ValueError(f"fps is {shown}; expected a frame rate above 0, or -1 to keep the driving video's rate")


def driving_frames_for_fps(frame_count: int, video_fps: float, fps: float) -> tuple[list[int], float]:
    """Which driving-video frames to use, and the frame rate of the result, for a generation at `fps`.

    `video_fps` is the driving video's rate (0 = unknown: the frames are used as given, at `fps`); `fps` is the
    rate to generate at (the official default is 30; -1 keeps the video's rate). Frames are picked by timestamp
    as the official preprocessing does (`frame_indices_for_fps`).
    """
    if not math.isfinite(video_fps) or video_fps < 0:
        raise ValueError(f"video_fps: expected the driving video's frame rate (> 0, or 0 if unknown); got {video_fps}")
    check_generation_fps(fps)
    if video_fps == 0:
        if fps == -1:
            raise ValueError("fps is -1 (keep the driving video's rate) but the video's rate is unknown: connect "
                             "video_fps (GetVideoComponents' fps) or set fps to the rate of the frames")
        return list(range(frame_count)), float(fps)
    indices = frame_indices_for_fps(frame_count, video_fps, fps)
    if not indices:
        raise ValueError(f"driving video: {frame_count} frames at {video_fps:g} fps last less than one frame at "
                         f"{fps:g} fps")
    return indices, float(video_fps if fps == -1 else fps)


def frame_indices_for_timestamps(timestamps_s: Sequence[float], target_fps: float) -> list[int]:
    """For variable-frame-rate sources: the frame whose timestamp is nearest to each tick i / target_fps, over the
    span of the timestamps. `target_fps` -1 uses the mean rate of the timestamps."""
    ts = np.asarray(timestamps_s, dtype=np.float64)
    if ts.ndim != 1 or len(ts) == 0:
        raise ValueError(f"timestamps must be a non-empty 1-D sequence; got shape {ts.shape}")
    if np.any(np.diff(ts) < 0):
        raise ValueError("timestamps must be non-decreasing")
    if target_fps == -1:
        target_fps = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 1.0
    if target_fps <= 0:
        raise ValueError(f"target fps must be positive or -1 (keep the source rate); got {target_fps}")
    ticks = ts[0] + np.arange(math.floor((ts[-1] - ts[0]) * target_fps + 1e-9) + 1) / target_fps
    right = np.clip(np.searchsorted(ts, ticks), 1, len(ts) - 1) if len(ts) > 1 else np.zeros(len(ticks), int)
    left = np.maximum(right - 1, 0)
    nearest = np.where(np.abs(ts[right] - ticks) < np.abs(ticks - ts[left]), right, left)
    return nearest.tolist()


def resample_frames_by_fps(frames: np.ndarray, src_fps: float, target_fps: float,
                           timestamps_s: Sequence[float] | None = None) -> np.ndarray:
    """Frames [F, ...] resampled to `target_fps` (-1 keeps them all): by the official index rule, or by nearest
    timestamp when per-frame timestamps (seconds) are given."""
    if len(frames) == 0:
        raise ValueError("video has 0 frames; at least 1 is needed")
    if timestamps_s is not None:
        if len(timestamps_s) != len(frames):
            raise ValueError(f"timestamps: expected one per frame ({len(frames)}); got {len(timestamps_s)}")
        indices = frame_indices_for_timestamps(timestamps_s, target_fps)
    else:
        indices = frame_indices_for_fps(len(frames), src_fps, target_fps)
    return frames[indices]


def padding_resize(image: np.ndarray, height: int, width: int, pad_value: int = 0,
                   interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Fit `image` [H, W, C] uint8 into height x width keeping its aspect ratio, centred, with `pad_value` around
    (the official `padding_resize`, including its integer truncations)."""
    if image.ndim != 3:
        raise ValueError(f"image: expected [H, W, C]; got shape {image.shape}")
    src_h, src_w, channels = image.shape
    canvas = np.full((height, width, channels), pad_value, dtype=np.uint8)
    if src_h / src_w > height / width:
        fit_w = int(height / src_h * src_w)
        resized = cv2.resize(image, (fit_w, height), interpolation=interpolation).reshape(height, fit_w, channels)
        left = int((width - fit_w) / 2)
        canvas[:, left:left + fit_w] = resized
    else:
        fit_h = int(width / src_w * src_h)
        resized = cv2.resize(image, (width, fit_h), interpolation=interpolation).reshape(fit_h, width, channels)
        top = int((height - fit_h) / 2)
        canvas[top:top + fit_h] = resized
    return canvas


def resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` [H, W, C] uint8 fitted into height x width as the official `resize_by_area` does: area interpolation
    when shrinking, bilinear when enlarging, black padding where the aspect ratios differ."""
    src_h, src_w = image.shape[:2]
    interpolation = cv2.INTER_AREA if width * height < src_w * src_h else cv2.INTER_LINEAR
    return padding_resize(image, height, width, interpolation=interpolation)


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Every frame of [F, H, W, 3] uint8 through `resize_to`: [F, height, width, 3]."""
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected uint8 [F, H, W, C]; got {frames.dtype} {frames.shape}")
    if len(frames) == 0:
        raise ValueError("video has 0 frames; at least 1 is needed")
    return np.stack([resize_to(frame, height, width) for frame in frames])
