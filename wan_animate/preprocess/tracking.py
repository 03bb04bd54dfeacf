"""Choosing the main person among the detections and following that one person through the video.

The official pipeline re-chooses the largest person in every frame, so the pose can jump to another person when
someone walks closer to the camera. `track_main_person` chooses once (by default with the official rule; a
`PersonChoice` can name another person) and then follows the chosen box by overlap and centre distance;
`select_main_person` alone reproduces the official per-frame choice.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

SHAPE_RATIO = 0.4  # a box whose longer side is under 40% of the (current) largest side is ignored
PERSON_CHOICES = "largest | leftmost | rightmost | index N | point X Y"


@dataclass(frozen=True)
class PersonChoice:
    """Which detected person to follow. `rule`: largest (the official choice), leftmost / rightmost (by box centre),
    index (the `index`-th by box area, 0 = the largest), point (the person whose box holds `point`, given as
    fractions (x, y) of the frame's width and height; else the nearest box centre). Except for `largest`, boxes
    whose longer side is under SHAPE_RATIO times the longest one are not counted (stray small detections)."""

    rule: str = "largest"
    index: int = 0
    point: tuple[float, float] | None = None

    def __str__(self) -> str:
        if self.rule == "index":
            return f"index {self.index}"
        if self.rule == "point":
            return f"point {self.point[0]:g} {self.point[1]:g}"
        return self.rule


def parse_person_choice(text: str) -> PersonChoice:
    """`largest`, `leftmost`, `rightmost`, `index N` (N >= 0, 0 = the largest) or `point X Y` (X, Y in 0..1, fractions
    of the first frame's width and height) -> PersonChoice; ValueError naming the accepted forms otherwise."""
    words = text.strip().lower().replace(",", " ").split()
    if len(words) == 1 and words[0] in ("largest", "leftmost", "rightmost"):
        return PersonChoice(words[0])
    if len(words) == 2 and words[0] == "index" and re.fullmatch(r"\d+", words[1]):
        return PersonChoice("index", index=int(words[1]))
    if len(words) == 3 and words[0] == "point":
        try:
            x, y = float(words[1]), float(words[2])
        except ValueError:
            x = y = float("nan")
        if 0 <= x <= 1 and 0 <= y <= 1:
            return PersonChoice("point", point=(x, y))
    raise ValueError(f"person is {text!r}; expected one of: {PERSON_CHOICES} (N: 0 = the largest person, 1 = the "
                     "next largest...; X, Y: fractions 0..1 of the frame's width and height, e.g. point 0.25 0.5)")


def choose_person(boxes: np.ndarray, choice: PersonChoice, frame_size: tuple[int, int]) -> int | None:
    """Index of the person `choice` names among `boxes` [N, >=4] (x1, y1, x2, y2, ...) of a frame of `frame_size`
    (height, width); None when there is nobody, or fewer people than an `index` choice needs."""
    if choice.rule == "largest" or len(boxes) == 0:
        return select_main_person(boxes)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    sides = np.maximum(widths, heights)
    counted = np.flatnonzero(sides >= SHAPE_RATIO * sides.max())
    centres = (boxes[counted, :2] + boxes[counted, 2:4]) / 2  # [n, 2] x, y
    if choice.rule == "leftmost":
        return int(counted[np.argmin(centres[:, 0])])
    if choice.rule == "rightmost":
        return int(counted[np.argmax(centres[:, 0])])
    if choice.rule == "index":
        by_area = counted[np.argsort(-(widths * heights)[counted], kind="stable")]
        return int(by_area[choice.index]) if choice.index < len(by_area) else None
    if choice.rule == "point":
        height, width = frame_size
        point = np.array([choice.point[0] * width, choice.point[1] * height])
        inside = (boxes[counted, 0] <= point[0]) & (point[0] <= boxes[counted, 2]) & \
                 (boxes[counted, 1] <= point[1]) & (point[1] <= boxes[counted, 3])
        pool = np.flatnonzero(inside) if inside.any() else np.arange(len(counted))
        distances = np.linalg.norm(centres[pool] - point, axis=1)
        return int(counted[pool[np.argmin(distances)]])
    raise ValueError(f"unknown person rule {choice.rule!r}; expected one of: {PERSON_CHOICES}")


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
                      reacquire_after: int | None = 30, carry_over: bool = True,
                      person: PersonChoice = PersonChoice(), frame_size: tuple[int, int] = (1, 1)) -> Track:
    """Follow one person through per-frame detections (each [N, >=4] boxes, see `PersonDetector.detect`).

    The person is chosen by `person` (default: the official rule) in the first frame where that person is found;
    `frame_size` (height, width) places a `point` choice. In a frame where no detection continues the track, the
    last box is carried over (`carry_over`) or left missing (NaN; the pose model then sees the full frame, as the
    official code does). After `reacquire_after` frames without a match (None: never) the person is chosen afresh.
    """
    boxes = np.full((len(detections), 4), np.nan)
    found = np.zeros(len(detections), dtype=bool)
    current, missed = None, 0
    for t, candidates in enumerate(detections):
        candidates = _as_boxes(candidates)
        if current is None or (reacquire_after is not None and missed > reacquire_after):
            index = choose_person(candidates, person, frame_size)
        else:
            index = _match(current, candidates, min_iou, max_centre_shift)
        if index is not None:
            current, missed = candidates[index, :4], 0
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
