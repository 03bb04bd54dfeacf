"""COCO-WholeBody keypoints -> the official 20-point body + two 21-point hands layout.

The pose model gives 133 keypoints per frame in pixels (x, y, score): 0-16 body, 17-22 feet, 23-90 face (68 points),
91-111 left hand, 112-132 right hand. The official preprocessing divides x by the frame width and y by its height in
float32, builds a 20-point body by averaging pairs of COCO points (the neck is the mean of both shoulders, each toe the
mean of the big and small toe), and multiplies back to pixels in float64 when drawing. Those float32 round trips decide
which pixel a stroke lands on, so this module reproduces them exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WHOLEBODY_POINTS = 133
FACE_POINTS = slice(23, 91)
LEFT_HAND_POINTS = slice(91, 112)
RIGHT_HAND_POINTS = slice(112, 133)

# The 20-point body: each point is the mean of two COCO-WholeBody points (the same index twice for a plain copy).
BODY_POINT_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear", "left_toe", "right_toe",
)
BODY_SOURCE_A = (0, 6, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 17, 20)
BODY_SOURCE_B = (0, 5, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, 18, 21)
BODY = {name: index for index, name in enumerate(BODY_POINT_NAMES)}
# Body limbs (bones) as pairs of 20-point body indices, in the official order: drawing and retargeting walk them in
# this order, and retargeting places each limb's second point from its (possibly already moved) first point.
BODY_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (13, 18), (10, 19),
)


@dataclass
class NormalizedPose:
    """One frame's pose with x / width and y / height in float32, as the official pose metadata stores it.

    body [20, 3], left_hand [21, 3], right_hand [21, 3], face [68, 3]: (x / width, y / height, score).
    """

    body: np.ndarray
    left_hand: np.ndarray
    right_hand: np.ndarray
    face: np.ndarray
    height: int
    width: int

    def body_pixels(self) -> np.ndarray:
        """[20, 3] float64 (x, y, score) in pixels of this pose's canvas."""
        return _to_pixels(self.body, self.width, self.height)

    def hand_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """Left and right hand, each [21, 3] float64 (x, y, score) in pixels."""
        return _to_pixels(self.left_hand, self.width, self.height), _to_pixels(self.right_hand, self.width, self.height)


def _to_pixels(points: np.ndarray, width: int, height: int) -> np.ndarray:
    # float32 normalised coordinates times an integer pair promote to float64, as in the official metadata.
    pixels = points.astype(np.float64)
    pixels[:, :2] = points[:, :2] * np.array([width, height])
    return pixels


def check_wholebody(keypoints: np.ndarray, name: str, frames: bool) -> np.ndarray:
    """Validate a [133, 3] (or [F, 133, 3] when `frames`) keypoint array and return it as float32."""
    keypoints = np.asarray(keypoints)
    expected = (WHOLEBODY_POINTS, 3)
    shape_ok = keypoints.shape[-2:] == expected and keypoints.ndim == (3 if frames else 2)
    if not shape_ok:
        wanted = "[F, 133, 3]" if frames else "[133, 3]"
        raise ValueError(f"{name}: expected COCO-WholeBody keypoints {wanted} (x, y, score), got {keypoints.shape}")
    if frames and keypoints.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one frame, got 0")
    return keypoints.astype(np.float32, copy=False)


def check_size(size, name: str) -> tuple[int, int]:
    """Validate a (height, width) pair of positive integers."""
    if len(size) != 2 or int(size[0]) <= 0 or int(size[1]) <= 0:
        raise ValueError(f"{name}: expected (height, width) with positive sides, got {tuple(size)}")
    return int(size[0]), int(size[1])


def normalize_wholebody(keypoints: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[..., 133, 3] pixels -> float32 (x / width, y / height, score)."""
    height, width = size
    normalized = np.array(keypoints, dtype=np.float32)
    normalized[..., 0] /= np.float32(width)
    normalized[..., 1] /= np.float32(height)
    return normalized


def normalized_pose(keypoints: np.ndarray, size: tuple[int, int]) -> NormalizedPose:
    """One frame of [133, 3] pixel keypoints on a canvas of `size` (height, width) -> NormalizedPose."""
    keypoints = check_wholebody(keypoints, "keypoints", frames=False)
    height, width = check_size(size, "size")
    normalized = normalize_wholebody(keypoints, (height, width))
    body = (normalized[list(BODY_SOURCE_A)] + normalized[list(BODY_SOURCE_B)]) / np.float32(2)  # [20, 3] float32
    return NormalizedPose(
        body=body,
        left_hand=normalized[LEFT_HAND_POINTS].copy(),
        right_hand=normalized[RIGHT_HAND_POINTS].copy(),
        face=normalized[FACE_POINTS].copy(),
        height=height,
        width=width,
    )


def normalized_video_poses(keypoints: np.ndarray, size: tuple[int, int]) -> list[NormalizedPose]:
    """[F, 133, 3] pixel keypoints -> one NormalizedPose per frame.

    As in the official pose metadata, a frame whose body points all have a negative coordinate (no person found)
    keeps the previous frame's body; hands and face stay the frame's own.
    """
    keypoints = check_wholebody(keypoints, "keypoints", frames=True)
    poses = []
    for frame_keypoints in keypoints:
        pose = normalized_pose(frame_keypoints, size)
        if poses and pose.body[:, :2].min(axis=1).max() < 0:
            pose.body = poses[-1].body
        poses.append(pose)
    return poses
