"""Choosing the main person among the detections and following that one person through the video.

The official pipeline re-chooses the largest person in every frame, so the pose can jump to another person when
someone walks closer to the camera. `track_main_person` chooses once (with the official rule) and then follows the
chosen box by overlap and centre distance; `select_main_person` alone reproduces the official per-frame choice.
`choose_person` lets the user pick another person instead: the n-th by size or from left to right.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPE_RATIO = 0.4  # a box whose longer side is under 40% of the (current) largest side is ignored
PERSON_ORDERS = ("main", "size", "left_to_right")


def select_main_person(boxes: np.ndarray, shape_ratio: float = SHAPE_RATIO) -> int | None:
    """Index of the official main person among `boxes` [N, >=4] (x1, y1, x2, y2, ...), or None when empty.

    The largest-area box wins, except that a box whose longer side is under `shape_ratio` times the reference
    side is skipped; the reference starts as the longest side of all boxes and becomes the chosen box's side.
    """
    if len(boxes) == 0:
        return None
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    sides = np.maximum(widths, heights)
    areas = widths * heights
    reference_side = sides.max()
    best, best_area = None, -np.inf
    for i in range(len(boxes)):
        if areas[i] > best_area and sides[i] >= reference_side * shape_ratio:
            best, best_area, reference_side = i, areas[i], sides[i]
    return best


def check_person_choice(order: str, index: int) -> None:
    if order not in PERSON_ORDERS:
        raise ValueError(f"person_order is {order!r}; expected one of {PERSON_ORDERS}")
    if index < 0 or (order == "main" and index != 0):
        raise ValueError(f"person_index is {index}; expected 0 with person_order 'main' (the official choice), or "
                         "0, 1, ... with 'size' (0 = largest) or 'left_to_right' (0 = leftmost)")


def choose_person(boxes: np.ndarray, order: str = "main", index: int = 0) -> int | None:
    """Index into `boxes` [N, >=4] of the person to follow: the official main person (order "main"), or the
    index-th largest box ("size") or index-th from the left by box centre ("left_to_right"); None when there are
    not that many boxes."""
    check_person_choice(order, index)
    if order == "main":
        return select_main_person(boxes)
    if len(boxes) <= index:
        return None
    if order == "size":
        key = -(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    else:
        key = boxes[:, 0] + boxes[:, 2]
    return int(np.argsort(key, kind="stable")[index])


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box [4] with each of `boxes` [N, 4] (x1, y1, x2, y2): [N]."""
    inter_w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = inter_w * inter_h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


@dataclass
class Track:
    """Per-frame box of the followed person. `boxes` [F, 4] x1, y1, x2, y2 (NaN where there is none yet);
    `found` [F] bool: a detection of that person in this frame (False: the box was carried over or is missing)."""
    boxes: np.ndarray
    found: np.ndarray


def _as_boxes(candidates) -> np.ndarray:
    array = np.asarray(candidates, dtype=np.float64)
    return np.zeros((0, 4)) if array.size == 0 else array.reshape(len(array), -1)


def _match(previous: np.ndarray, candidates: np.ndarray, min_iou: float, max_centre_shift: float) -> int | None:
    """The candidate continuing `previous`: best IoU if >= min_iou, else the nearest centre if it moved less than
    `max_centre_shift` times the previous box's diagonal."""
    if len(candidates) == 0:
        return None
    ious = box_iou(previous, candidates[:, :4])
    best = int(np.argmax(ious))
    if ious[best] >= min_iou:
        return best
    centre = (previous[:2] + previous[2:4]) / 2
    centres = (candidates[:, :2] + candidates[:, 2:4]) / 2
    shifts = np.linalg.norm(centres - centre, axis=1)
    diagonal = np.hypot(previous[2] - previous[0], previous[3] - previous[1])
    nearest = int(np.argmin(shifts))
    return nearest if shifts[nearest] <= max_centre_shift * diagonal else None


def track_main_person(detections: list[np.ndarray], min_iou: float = 0.1, max_centre_shift: float = 0.5,
                      reacquire_after: int | None = 30, carry_over: bool = True, order: str = "main",
                      index: int = 0) -> Track:
    """Follow one person through per-frame detections (each [N, >=4] boxes, see `PersonDetector.detect`).

    The person is chosen (`choose_person` with `order` and `index`; default the official rule) in the first frame
    where there is one to choose. In a frame where no
    detection continues the track, the last box is carried over (`carry_over`) or left missing (NaN; the pose
    model then sees the full frame, as the official code does). After `reacquire_after` frames without a match
    (None: never) the main person is chosen afresh.
    """
    boxes = np.full((len(detections), 4), np.nan)
    found = np.zeros(len(detections), dtype=bool)
    current, missed = None, 0
    for t, candidates in enumerate(detections):
        candidates = _as_boxes(candidates)
        if current is None or (reacquire_after is not None and missed > reacquire_after):
            chosen = choose_person(candidates, order, index)
        else:
            chosen = _match(current, candidates, min_iou, max_centre_shift)
        if chosen is not None:
            current, missed = candidates[chosen, :4], 0
            boxes[t], found[t] = current, True
        else:
            missed += 1
            if current is not None and carry_over:
                boxes[t] = current
    return Track(boxes=boxes, found=found)


def official_per_frame_choice(detections: list[np.ndarray]) -> Track:
    """The official behaviour: the main person chosen afresh in every frame, no box where nothing is detected."""
    boxes = np.full((len(detections), 4), np.nan)
    found = np.zeros(len(detections), dtype=bool)
    for t, candidates in enumerate(detections):
        candidates = _as_boxes(candidates)
        index = select_main_person(candidates)
        if index is not None:
            boxes[t], found[t] = candidates[index, :4], True
    return Track(boxes=boxes, found=found)
