"""Resolution policy: the generation size for a given aspect ratio and pixel budget.

Animation follows the character image's aspect ratio, Replacement the driving video's. `size_for_aspect` picks, among
sizes with both sides multiples of 16 and an aspect ratio as close as those multiples allow (height rounded down or up,
then width rounded down or up from height * aspect), the one whose token count (area / 16**2) is closest to the target
area's; ties go to the closer aspect ratio, then the smaller size.
For 16:9 sources this is the official preprocessing's size too (1920x1080 -> 1280x720); for other aspect ratios the
official `resize_by_area` rounds both sides of the exact-area size down to multiples of 16, which can land further from
the target area.
No side exceeds `MAX_SIDE` (the Preprocess node's largest width / height): for extreme aspect ratios (a 4000x100
strip) the long side stops there and the size keeps the aspect ratio with less than the target area.
"""
from __future__ import annotations

import math

DEFAULT_AREA = 1280 * 720
SIZE_MULTIPLE = 16
MAX_SIDE = 4096


def _check(width: int, height: int, target_area: int, multiple: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"source size is {width}x{height}; expected positive width and height")
    if target_area < multiple * multiple:
        raise ValueError(f"target_area is {target_area}; expected at least {multiple * multiple}")


def _near_multiples(value: float, multiple: int) -> tuple[int, ...]:
    low = max(multiple, multiple * math.floor(value / multiple))
    return (low, low + multiple)


def size_for_aspect(
    width: int, height: int, target_area: int = DEFAULT_AREA, multiple: int = SIZE_MULTIPLE,
    max_side: int = MAX_SIDE,
) -> tuple[int, int]:
    """(width, height) with the source's aspect ratio and a token count closest to target_area's, both sides at most
    `max_side`; when that area would need a longer side, the size closest to the aspect ratio with its long side near
    the largest multiple within `max_side` (the larger of equally close ones)."""
    _check(width, height, target_area, multiple)
    aspect = width / height
    longest = max(multiple, max_side // multiple * multiple)
    candidates = []
    for h in _near_multiples(math.sqrt(target_area / aspect), multiple):
        for w in _near_multiples(h * aspect, multiple):
            if w <= longest and h <= longest:
                candidates.append((abs(w * h - target_area), abs(w / h - aspect), w * h, w, h))
    if candidates:
        best = min(candidates)
        return best[3], best[4]
    pairs = [(longest, h) for h in _near_multiples(longest / aspect, multiple)]
    pairs += [(w, longest) for w in _near_multiples(longest * aspect, multiple)]
    pairs += [(w, h) for h in _near_multiples(longest / aspect, multiple) for w in _near_multiples(h * aspect, multiple)]
    pairs += [(w, h) for w in _near_multiples(longest * aspect, multiple) for h in _near_multiples(w / aspect, multiple)]
    fitting = [(abs(w / h - aspect), -w * h, w, h) for w, h in pairs if w <= longest and h <= longest]
    best = min(fitting)
    return best[2], best[3]


def generation_size(
    mode: str,
    reference_size: tuple[int, int],
    video_size: tuple[int, int],
    target_area: int = DEFAULT_AREA,
) -> tuple[int, int]:
    """(width, height) to generate at: Animation uses the reference image's aspect, Replacement the video's.

    reference_size and video_size are (width, height).
    """
    if mode == "animate":
        source = reference_size
    elif mode == "replace":
        source = video_size
    else:
        raise ValueError(f"mode is {mode!r}; expected 'animate' or 'replace'")
    return size_for_aspect(source[0], source[1], target_area)
