"""Skeleton pictures in the official "v2" style (the pictures Wan-Animate's pose branch was trained on).

Drawing order, colours and rounding follow the official renderer: 19 body limbs as filled ellipses at 60% of their
colour, then 20 body joints as full-colour discs, then each hand (left, then right): 20 bones as lines coloured around
the hue circle, then its joints as blue discs. Points under the score threshold are skipped; coordinates are truncated
to integers (toward zero) the way the official code does. Canvases are RGB.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .keypoints import BODY_LIMBS, check_size, normalized_pose, normalized_video_poses

DRAW_THRESHOLD = 0.5

# One colour (RGB) per body limb (in BODY_LIMBS order) and per body joint; the last one is only used for a joint.
BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85), (200, 200, 0), (100, 100, 0),
)
LIMB_SHADE = 0.6
# Hand bones: wrist (0) to each finger's base, then along each finger.
HAND_BONES = tuple(
    pair for finger in range(5) for pair in ((0, 4 * finger + 1), (4 * finger + 1, 4 * finger + 2),
                                             (4 * finger + 2, 4 * finger + 3), (4 * finger + 3, 4 * finger + 4))
)
HAND_JOINT_COLOR = (0, 0, 255)
# Hand points at or below this pixel coordinate are treated as absent (the official renderer's eps).
HAND_MIN_COORD = 0.01


def hsv_to_rgb(hue: float, saturation: float = 1.0, value: float = 1.0) -> tuple[float, float, float]:
    """HSV in [0, 1] -> RGB in [0, 1], with the same float operations as matplotlib's hsv_to_rgb."""
    sector = int(hue * 6.0)
    fraction = hue * 6.0 - sector
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    if saturation == 0:
        return value, value, value
    return (
        (value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)
    )[sector % 6]


# Float colours: OpenCV rounds them to uint8 itself, as it does for the official matplotlib colours.
HAND_BONE_COLORS = tuple(
    tuple(channel * 255 for channel in hsv_to_rgb(index / len(HAND_BONES))) for index in range(len(HAND_BONES))
)


def body_stick_width(canvas_size: tuple[int, int]) -> int:
    """Half-thickness of body limbs and radius of body joints ("v2": 1 px per 200 px of the short side, minus 1)."""
    return max(int(min(canvas_size) / 200) - 1, 1)


def hand_stick_width(canvas_size: tuple[int, int]) -> int:
    """Thickness of hand bones and radius of hand joints: half the body's, at least 1."""
    return max(body_stick_width(canvas_size) // 2, 1)


def _visible(point: np.ndarray, threshold: float) -> bool:
    return bool(point[2] >= threshold) and bool(np.isfinite(point[0])) and bool(np.isfinite(point[1]))


def draw_body(canvas: np.ndarray, body: np.ndarray, threshold: float = DRAW_THRESHOLD) -> None:
    """Draw a [20, 3] pixel body (x, y, score) onto an RGB uint8 canvas, in place."""
    stick = body_stick_width(canvas.shape[:2])
    for (first, second), color in zip(BODY_LIMBS, BODY_COLORS):
        start, end = body[first], body[second]
        if not (_visible(start, threshold) and _visible(end, threshold)):
            continue
        center_x = np.mean([start[0], end[0]])
        center_y = np.mean([start[1], end[1]])
        length = ((start[1] - end[1]) ** 2 + (start[0] - end[0]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(start[1] - end[1], start[0] - end[0]))
        outline = cv2.ellipse2Poly((int(center_x), int(center_y)), (int(length / 2), stick), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, outline, [int(float(channel) * LIMB_SHADE) for channel in color])
    for point, color in zip(body, BODY_COLORS):
        if _visible(point, threshold):
            cv2.circle(canvas, (int(point[0]), int(point[1])), stick, color, thickness=-1)


def draw_hand(canvas: np.ndarray, hand: np.ndarray, threshold: float = DRAW_THRESHOLD) -> None:
    """Draw a [21, 3] pixel hand (x, y, score) onto an RGB uint8 canvas, in place. NaN points are skipped."""
    stick = hand_stick_width(canvas.shape[:2])
    for (first, second), color in zip(HAND_BONES, HAND_BONE_COLORS):
        start, end = hand[first], hand[second]
        if not (_visible(start, threshold) and _visible(end, threshold)):
            continue
        x1, y1, x2, y2 = int(start[0]), int(start[1]), int(end[0]), int(end[1])
        if min(x1, y1, x2, y2) > HAND_MIN_COORD:
            cv2.line(canvas, (x1, y1), (x2, y2), color, thickness=stick)
    for point in hand:
        if not _visible(point, threshold):
            continue
        x, y = int(point[0]), int(point[1])
        if x > HAND_MIN_COORD and y > HAND_MIN_COORD:
            cv2.circle(canvas, (x, y), stick, HAND_JOINT_COLOR, thickness=-1)


def draw_skeleton(canvas_size: tuple[int, int], body: np.ndarray, left_hand: np.ndarray,
                  right_hand: np.ndarray, threshold: float = DRAW_THRESHOLD) -> np.ndarray:
    """Body [20, 3] and hands [21, 3] in pixels (x, y, score) -> uint8 [H, W, 3] picture on black."""
    height, width = check_size(canvas_size, "canvas_size")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    draw_body(canvas, np.asarray(body, dtype=np.float64), threshold)
    draw_hand(canvas, np.asarray(left_hand, dtype=np.float64), threshold)
    draw_hand(canvas, np.asarray(right_hand, dtype=np.float64), threshold)
    return canvas


def render_pose(keypoints: np.ndarray, canvas_size: tuple[int, int], threshold: float = DRAW_THRESHOLD) -> np.ndarray:
    """One frame's [133, 3] pixel keypoints drawn on a black canvas of their own frame size -> uint8 [H, W, 3]."""
    pose = normalized_pose(keypoints, canvas_size)
    return draw_skeleton(canvas_size, pose.body_pixels(), *pose.hand_pixels(), threshold=threshold)


def fit_with_padding(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize bilinearly keeping the aspect ratio to fit `size` (height, width), centred on black padding."""
    height, width = check_size(size, "size")
    source_height, source_width = image.shape[:2]
    fitted = np.zeros((height, width, image.shape[2]), dtype=np.uint8)
    if source_height / source_width > height / width:
        new_width = int(height / source_height * source_width)
        left = int((width - new_width) / 2)
        fitted[:, left:left + new_width] = cv2.resize(image, (new_width, height), interpolation=cv2.INTER_LINEAR)
    else:
        new_height = int(width / source_width * source_height)
        top = int((height - new_height) / 2)
        fitted[top:top + new_height] = cv2.resize(image, (width, new_height), interpolation=cv2.INTER_LINEAR)
    return fitted


def render_replace_poses(keypoints: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Replacement mode: [F, 133, 3] keypoints drawn at the frame size -> uint8 [F, H, W, 3]."""
    frame_size = check_size(frame_size, "frame_size")
    poses = normalized_video_poses(keypoints, frame_size)
    return np.stack([draw_skeleton(frame_size, pose.body_pixels(), *pose.hand_pixels()) for pose in poses])


def render_animate_poses(keypoints: np.ndarray, frame_size: tuple[int, int], ref_size: tuple[int, int]) -> np.ndarray:
    """Animation without retargeting: drawn at the frame size, then fitted to the reference size -> [F, RH, RW, 3]."""
    ref_size = check_size(ref_size, "ref_size")
    return np.stack([fit_with_padding(picture, ref_size) for picture in render_replace_poses(keypoints, frame_size)])


def render_skeleton_video(body: np.ndarray, left_hand: np.ndarray, right_hand: np.ndarray,
                          canvas_size: tuple[int, int]) -> np.ndarray:
    """Pixel skeletons body [F, 20, 3], hands [F, 21, 3] (NaN = absent) -> uint8 [F, H, W, 3]."""
    body, left_hand, right_hand = (np.asarray(a, dtype=np.float64) for a in (body, left_hand, right_hand))
    if body.ndim != 3 or body.shape[1:] != (20, 3):
        raise ValueError(f"body: expected [F, 20, 3], got {body.shape}")
    for name, hand in (("left_hand", left_hand), ("right_hand", right_hand)):
        if hand.shape != (body.shape[0], 21, 3):
            raise ValueError(f"{name}: expected [{body.shape[0]}, 21, 3], got {hand.shape}")
    return np.stack([draw_skeleton(canvas_size, *frame) for frame in zip(body, left_hand, right_hand)])

