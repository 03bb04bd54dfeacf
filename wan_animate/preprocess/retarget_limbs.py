"""Limb geometry for retargeting: bone lengths, per-limb length ratios, and re-placing joints along scaled limbs.

Bodies here are [20, 3] float64 arrays (x, y, score) in the official 20-point layout (see keypoints.py). The float
operations follow the official retargeting (including the degrees round trip of limb angles) so results agree to
round-off.
"""
from __future__ import annotations

import math

import numpy as np

from .keypoints import BODY, BODY_LIMBS

# Limb indices (positions in BODY_LIMBS) used by the retargeting rules.
SHOULDER_LIMBS = (0, 1)            # neck -> right shoulder, neck -> left shoulder
RIGHT_LOWER_LEG, LEFT_LOWER_LEG = 8, 11
LEFT_FOOT, RIGHT_FOOT = 17, 18     # ankle -> toe
# Left/right limb pairs that take the larger of their two ratios (shoulders, upper arms, forearms, hip-neck lines,
# thighs, lower legs, feet), and the face lines whose ratios are averaged (nose -> eyes, eyes -> ears).
SYMMETRIC_LIMB_PAIRS = ((0, 1), (2, 4), (3, 5), (6, 9), (7, 10), (8, 11), (17, 18))
AVERAGED_FACE_LIMB_PAIRS = ((13, 15), (14, 16))
# A foot may be at most this fraction of its lower leg after scaling.
FOOT_TO_LOWER_LEG = 0.5


def limb_length(start_xy, end_xy):
    """Euclidean length between two (x, y) points."""
    return ((start_xy[1] - end_xy[1]) ** 2 + (start_xy[0] - end_xy[0]) ** 2) ** 0.5


def limb_angle_degrees(start_xy, end_xy) -> float:
    """Direction from the end point back to the start point, in degrees (the official convention)."""
    return math.degrees(math.atan2(start_xy[1] - end_xy[1], start_xy[0] - end_xy[0]))


def bone_lengths(body: np.ndarray, height: float, width: float) -> np.ndarray:
    """[19] lengths in pixels of the limbs of a normalised [20, 3] body on a (height, width) canvas."""
    lengths = np.empty(len(BODY_LIMBS))
    for index, (first, second) in enumerate(BODY_LIMBS):
        xs = np.array([body[first, 0], body[second, 0]]) * float(width)
        ys = np.array([body[first, 1], body[second, 1]]) * float(height)
        lengths[index] = ((xs[0] - xs[1]) ** 2 + (ys[0] - ys[1]) ** 2) ** 0.5
    return lengths


def harmonize_ratios(ratios: np.ndarray) -> np.ndarray:
    """Left and right limbs take the larger ratio of the pair; nose-eye and eye-ear ratios are averaged."""
    ratios = ratios.copy()
    for first, second in SYMMETRIC_LIMB_PAIRS:
        ratios[first] = ratios[second] = max(ratios[first], ratios[second])
    for first, second in AVERAGED_FACE_LIMB_PAIRS:
        ratios[first] = ratios[second] = (ratios[first] + ratios[second]) / 2
    return ratios


def fill_unusable_ratios(ratios: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Limbs without a usable ratio take the mean shoulder ratio (1 when the shoulders have none either)."""
    ratios = ratios.copy()
    shoulders_usable = usable[SHOULDER_LIMBS[0]] and usable[SHOULDER_LIMBS[1]]
    fallback = (ratios[SHOULDER_LIMBS[0]] + ratios[SHOULDER_LIMBS[1]]) / 2 if shoulders_usable else 1.0
    ratios[~usable] = fallback
    return ratios


def scale_limbs(body_px: np.ndarray, ratios: np.ndarray, limit_feet: bool) -> np.ndarray:
    """Scale each limb's length by its ratio, keeping its direction; the neck stays put.

    Limbs are walked in order and each one's second joint is placed from its first joint's new position, so a
    chain (shoulder -> elbow -> wrist) moves as a whole. With `limit_feet`, a scaled foot is kept within half its
    scaled lower leg. body_px [20, 3] (x, y, score) in pixels -> the same layout, scores unchanged.
    """
    new_lengths = []
    angles = []
    for index, (first, second) in enumerate(BODY_LIMBS):
        new_lengths.append(limb_length(body_px[first], body_px[second]) * ratios[index])
        angles.append(limb_angle_degrees(body_px[first], body_px[second]))
    if limit_feet:
        for foot, lower_leg in ((RIGHT_FOOT, RIGHT_LOWER_LEG), (LEFT_FOOT, LEFT_LOWER_LEG)):
            new_lengths[foot] = min(new_lengths[foot], new_lengths[lower_leg] * FOOT_TO_LOWER_LEG)
    scaled = body_px.copy()
    for (first, second), new_length, angle in zip(BODY_LIMBS, new_lengths, angles):
        radians = math.radians(angle)
        scaled[second, 0] = scaled[first, 0] - new_length * math.cos(radians)
        scaled[second, 1] = scaled[first, 1] - new_length * math.sin(radians)
    return scaled


def body_extent(body: np.ndarray, threshold: float = 0.4) -> int:
    """How much of the body is in the picture: 2 = down to the ankles, 1 = down to the hips, 0 = upper body only.

    Needs the ankles (for 2) and hips with score >= threshold and normalised y <= 1 (inside the picture).
    """
    def inside(*names: str) -> bool:
        return all(body[BODY[name], 1] <= 1 and body[BODY[name], 2] >= threshold for name in names)

    if inside("right_ankle", "left_ankle", "right_hip", "left_hip"):
        return 2
    if inside("right_hip", "left_hip"):
        return 1
    return 0
