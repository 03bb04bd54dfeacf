"""Optional temporal smoothing of keypoint tracks (off by default: the official pipeline does not smooth).

A confidence-weighted bilateral filter over time: each point becomes the weighted mean of the same point in nearby
frames, weighted by closeness in time (Gaussian, sigma_t frames), by closeness in position (Gaussian, sigma_r, in
units of the person's size) and by the neighbour's score. Detector jitter, small compared with sigma_r, is averaged
away; fast moves and sudden steps, large compared with sigma_r, get almost no weight from the other side and stay
sharp, with no lag since the window is centred. Points under the confidence threshold are left where they are and
lend no weight; scores are never changed.
"""
from __future__ import annotations

import numpy as np

BODY_AND_FEET = slice(0, 23)


def person_size(keypoints: np.ndarray, min_score: float = 0.3) -> float:
    """Median over frames of the larger side of the box around the confident body and feet points (pixels)."""
    sizes = []
    for frame in keypoints[:, BODY_AND_FEET]:
        confident = frame[frame[:, 2] >= min_score, :2]
        if len(confident) >= 2:
            sizes.append(float((confident.max(axis=0) - confident.min(axis=0)).max()))
    size = float(np.median(sizes)) if sizes else 0.0
    return size if size > 0 else 1.0


def smoothing_sigmas(strength: float) -> tuple[float, float]:
    """(sigma_t in frames, sigma_r as a fraction of the person's size) for `strength` in (0, 1]."""
    return 0.5 + 3.0 * strength, 0.01 + 0.04 * strength


def smooth_keypoints(keypoints: np.ndarray, strength: float = 0.0, min_score: float = 0.3) -> np.ndarray:
    """Smoothed copy of `keypoints` [F, K, 3] (x, y, score); `strength` 0 (off: an unchanged copy) .. 1.

    strength 1 averages with sigma_t 3.5 frames and treats moves under about 5% of the person's size (sigma_r)
    as jitter; strength 0.5: 2 frames, 3%; points scoring under `min_score` are neither moved nor used.
    """
    keypoints = np.asarray(keypoints)
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints: expected [F, K, 3] (x, y, score); got shape {keypoints.shape}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"smoothing strength must be within 0..1; got {strength}")
    if strength == 0.0 or len(keypoints) < 2:
        return keypoints.copy()
    sigma_t, sigma_r = smoothing_sigmas(strength)
    sigma_r *= person_size(keypoints, min_score)
    frames = len(keypoints)
    points = keypoints[..., :2].astype(np.float64)  # [F, K, 2]
    weight_of = np.where(keypoints[..., 2] >= min_score, keypoints[..., 2], 0.0).astype(np.float64)  # [F, K]
    total = np.zeros_like(points)
    norm = np.zeros(points.shape[:2])
    radius = int(np.ceil(3 * sigma_t))
    for offset in range(-radius, radius + 1):
        lo, hi = max(0, -offset), min(frames, frames - offset)  # frames t whose neighbour t + offset exists
        if lo >= hi:
            continue
        here, there = points[lo:hi], points[lo + offset:hi + offset]
        distance2 = ((there - here) ** 2).sum(axis=-1)
        weight = weight_of[lo + offset:hi + offset] * np.exp(-offset ** 2 / (2 * sigma_t ** 2)
                                                             - distance2 / (2 * sigma_r ** 2))
        total[lo:hi] += weight[..., None] * there
        norm[lo:hi] += weight
    smoothed = keypoints.copy()
    confident = (weight_of > 0) & (norm > 0)
    smoothed[..., :2] = np.where(confident[..., None], total / np.maximum(norm, 1e-300)[..., None], points)
    return smoothed
