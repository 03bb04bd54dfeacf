"""Face crop boxes from the face keypoints and the 512x512 crops the face motion encoder reads.

The official box is the bounding box of the 68 face keypoints, grown so its area is `scale` times larger with the
same aspect ratio; the extra width goes equally left and right, the extra height 3 parts up (forehead) for 1 part
down; the box is then clipped to the frame and truncated to integers. Official boxes use every face point whatever
its score. Frames where the face was not found (most face scores low, points without extent, or a face wholly
outside the frame, where the official box is empty or inverted and its crop fails or is garbage) take the box of the
nearest frame with a face instead, and are counted so callers can report them. Every other box is the official one.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from .keypoints import FACE_POINTS, check_size, check_wholebody, normalize_wholebody

FACE_CROP_SIZE = 512
# A face counts as found when at least half of its 68 keypoints reach this score.
FACE_MIN_SCORE = 0.3
FACE_SCALE = 1.3  # official area factor of the face box


class FaceBoxes(NamedTuple):
    """boxes [F, 4] int32 (x1, x2, y1, y2); missing [F] bool: frames without a face, given a neighbour's box."""

    boxes: np.ndarray
    missing: np.ndarray

    @property
    def missing_count(self) -> int:
        return int(self.missing.sum())

    def require_faces(self, source: str) -> "FaceBoxes":
        """These boxes, or a ValueError when no frame of `source` has a face (its crops would show no face)."""
        if len(self.missing) and self.missing.all():
            raise ValueError(f"no face was found in any of the {len(self.missing)} frames of the {source}; the face "
                             "crops drive the facial expression: use a video where the person's face is visible")
        return self


def face_box(face_xy: np.ndarray, frame_size: tuple[int, int], scale: float = 1.3) -> tuple[int, int, int, int] | None:
    """(x1, x2, y1, y2) around [68, 2] face points in pixels, or None when their extent has no area."""
    height, width = frame_size
    min_x, min_y = face_xy.min(axis=0)
    max_x, max_y = face_xy.max(axis=0)
    box_width = max_x - min_x
    box_height = max_y - min_y
    if not (box_width > 0 and box_height > 0):
        return None
    grown_area = box_width * box_height * scale
    grown_width = np.sqrt(grown_area * (box_width / box_height))
    grown_height = np.sqrt(grown_area * (box_height / box_width))
    grow_x = (grown_width - box_width) / 2
    grow_y = (grown_height - box_height) / 4  # a quarter below, three quarters above
    x1 = max(min_x - grow_x, 0)
    x2 = min(max_x + grow_x, width)
    y1 = max(min_y - 3 * grow_y, 0)
    y2 = min(max_y + grow_y, height)
    return int(x1), int(x2), int(y1), int(y2)


def detect_face_boxes(keypoints: np.ndarray, frame_size: tuple[int, int], scale: float = 1.3) -> FaceBoxes:
    """Face boxes for [F, 133, 3] pixel keypoints of frames of `frame_size` (height, width)."""
    keypoints = check_wholebody(keypoints, "keypoints", frames=True)
    height, width = check_size(frame_size, "frame_size")
    # Official rounding: float32 normalised coordinates, multiplied back to pixels in float64.
    face = normalize_wholebody(keypoints, (height, width))[:, FACE_POINTS]  # [F, 68, 3]
    face_xy = face[..., :2] * np.array([width, height])
    frames = keypoints.shape[0]
    found: list[tuple[int, int, int, int] | None] = []
    for index in range(frames):
        box = None
        if (face[index, :, 2] >= FACE_MIN_SCORE).mean() >= 0.5:
            box = face_box(face_xy[index], (height, width), scale)
            if box is not None and (box[1] <= box[0] or box[3] <= box[2]):
                box = None
        found.append(box)
    missing = np.array([box is None for box in found], dtype=bool)
    valid = np.flatnonzero(~missing)
    boxes = np.zeros((frames, 4), dtype=np.int32)
    for index in range(frames):
        if not missing[index]:
            boxes[index] = found[index]
        elif valid.size:
            nearest = valid[np.argmin(np.abs(valid - index))]
            boxes[index] = found[nearest]
        else:
            boxes[index] = (0, width, 0, height)  # no face anywhere: the whole frame
    return FaceBoxes(boxes, missing)


def face_boxes(keypoints: np.ndarray, frame_size: tuple[int, int], scale: float = 1.3) -> np.ndarray:
    """[F, 4] int32 (x1, x2, y1, y2) face boxes; see detect_face_boxes for the frames-without-face report."""
    return detect_face_boxes(keypoints, frame_size, scale).boxes


def crop_faces(frames_u8: np.ndarray, boxes: np.ndarray, size: int = FACE_CROP_SIZE) -> np.ndarray:
    """Cut each frame's box (x1, x2, y1, y2) and resize it bilinearly: [F, H, W, 3] -> [F, size, size, 3] uint8."""
    frames_u8 = np.asarray(frames_u8)
    boxes = np.asarray(boxes)
    if frames_u8.ndim != 4 or frames_u8.shape[-1] != 3 or frames_u8.dtype != np.uint8:
        raise ValueError(f"frames_u8: expected uint8 [F, H, W, 3], got {frames_u8.dtype} {frames_u8.shape}")
    if boxes.shape != (frames_u8.shape[0], 4):
        raise ValueError(f"boxes: expected [{frames_u8.shape[0]}, 4] (one per frame), got {boxes.shape}")
    crops = np.empty((frames_u8.shape[0], size, size, 3), dtype=np.uint8)
    for index, (frame, (x1, x2, y1, y2)) in enumerate(zip(frames_u8, boxes.tolist())):
        patch = frame[y1:y2, x1:x2]
        if patch.size == 0:
            raise ValueError(f"boxes[{index}] = {(x1, x2, y1, y2)} is empty inside a frame of {frame.shape[:2]}")
        crops[index] = cv2.resize(patch, (size, size))
    return crops


def steady_face_boxes(boxes: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """The boxes [F, 4] (x1, x2, y1, y2) resized to one size for the whole clip (the median width and height),
    each around its own centre and shifted back inside the frame: the crops no longer zoom in and out from frame to
    frame. Returns [F, 4] int32."""
    boxes = np.asarray(boxes, dtype=np.float64)
    height, width = frame_size
    box_w = min(float(np.median(boxes[:, 1] - boxes[:, 0])), width)
    box_h = min(float(np.median(boxes[:, 3] - boxes[:, 2])), height)
    centre_x = (boxes[:, 0] + boxes[:, 1]) / 2
    centre_y = (boxes[:, 2] + boxes[:, 3]) / 2
    x1 = np.clip(centre_x - box_w / 2, 0, width - box_w)
    y1 = np.clip(centre_y - box_h / 2, 0, height - box_h)
    steady = np.stack([x1, x1 + box_w, y1, y1 + box_h], axis=1)
    return np.maximum(np.floor(steady + 1e-9), 0).astype(np.int32)
