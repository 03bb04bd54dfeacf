"""Retarget a driving video's skeletons to the reference character's proportions and position (official maths).

Outline of the official algorithm (Wan2.2 `retarget_pose.py`), reproduced here:
1. `scale`: driving body height over reference body height (nose to ankles, else nose to hips, when both persons
   have those points with score > 0.5; else the square root of the canvas area ratio). The reference canvas is
   scaled by it (sides truncated to integers), so lengths compare at the driving video's scale.
2. Per-limb ratios: reference bone length / driving bone length, measured on the first driving frame and the
   reference, or on their T-pose versions when both are given (then corrected for a change of scale by the edit).
   Left and right limbs take the larger ratio of the pair; nose-eye and eye-ear ratios are averaged.
3. Anchor: the first driving frame, re-proportioned, is aligned with the reference at the feet (mean hip x, lowest
   foot y) when both show the whole body down to the ankles, otherwise at the neck.
4. Each frame: limbs scaled by their ratios from the neck outwards (feet at most half the lower leg), shifted by the
   anchor offset, divided by `scale` into reference pixels. Hands are scaled about their wrist point by the
   shoulder ratio / `scale` and moved with the new wrist; hand points under score 0.4 are dropped (NaN).

Quirks of the official code that change the output and are kept deliberately: the first frame alone gets an extra
horizontal correction (the anchor offset is adjusted inside the per-frame call); hand coordinates are truncated to
integers; which hand follows which wrist is decided by comparing the distances of the COCO right hand's root to both
wrists, and the output's "left hand" is the one placed at the right wrist (body point 4) unless swapped.
Where the official code would divide by zero (coincident points, e.g. an all-zero-score frame), a limb without a
usable ratio takes the mean shoulder ratio and a degenerate height falls back to the area ratio instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .keypoints import (
    BODY,
    NormalizedPose,
    check_size,
    check_wholebody,
    normalized_pose,
    normalized_video_poses,
)
from .render import render_skeleton_video
from .retarget_limbs import (
    SHOULDER_LIMBS,
    body_extent,
    bone_lengths,
    fill_unusable_ratios,
    harmonize_ratios,
    scale_limbs,
)

HEIGHT_SCORE = 0.5        # points used for the body-height scale need a score above this
EXTENT_SCORE = 0.4        # score for "ankles / hips are in the picture"
HAND_KEEP_SCORE = 0.4     # hand points under this score are dropped
HEAD_POINTS = ("nose", "right_eye", "left_eye", "right_ear", "left_ear")
FULL_BODY = 2
UPPER_BODY = 0
ABSENT = -1.0             # the official marker for a dropped hand point before placement


@dataclass
class RetargetedPoses:
    """Retargeted skeletons in reference-image pixels: body [F, 20, 3], hands [F, 21, 3] (x, y, score), NaN where
    a point was dropped; `canvas_size` is the reference (height, width)."""

    body: np.ndarray
    left_hand: np.ndarray
    right_hand: np.ndarray
    canvas_size: tuple[int, int]

    def render(self) -> np.ndarray:
        """The skeleton video at the reference size: uint8 [F, RH, RW, 3]."""
        return render_skeleton_video(self.body, self.left_hand, self.right_hand, self.canvas_size)


@dataclass
class _Skeleton:
    """A normalised body [20, 3] float64 on a canvas whose (possibly rescaled) size is height x width."""

    body: np.ndarray
    height: int
    width: int

    @classmethod
    def of(cls, pose: NormalizedPose) -> _Skeleton:
        return cls(pose.body.astype(np.float64), pose.height, pose.width)


def _body_height(skeleton: _Skeleton, low_points: tuple[str, str]) -> float:
    body = skeleton.body
    low_y = (body[BODY[low_points[0]], 1] + body[BODY[low_points[1]], 1]) / 2
    return skeleton.height * abs(low_y - body[BODY["nose"], 1])


def height_scale(driving: _Skeleton, reference: _Skeleton) -> tuple[float, bool]:
    """Driving over reference body height, and whether it fell back to the canvas-area ratio."""
    for low_points in (("right_ankle", "left_ankle"), ("right_hip", "left_hip")):
        names = ("nose",) + low_points
        if all(s.body[BODY[name], 2] > HEIGHT_SCORE for s in (driving, reference) for name in names):
            driving_height, reference_height = _body_height(driving, low_points), _body_height(reference, low_points)
            if driving_height > 0 and reference_height > 0:
                return 1.0 * driving_height / reference_height, False
            break
    area_ratio = np.sqrt(driving.height * driving.width) / np.sqrt(reference.height * reference.width)
    return float(area_ratio), True


def _shoulder_width(skeleton: _Skeleton) -> float:
    left, right = skeleton.body[BODY["left_shoulder"]], skeleton.body[BODY["right_shoulder"]]
    xs = np.array([left[0], right[0]]) * float(skeleton.width)
    ys = np.array([left[1], right[1]]) * float(skeleton.height)
    return ((xs[0] - xs[1]) ** 2 + (ys[0] - ys[1]) ** 2) ** 0.5


def _edit_scale_correction(original: _Skeleton, edited: _Skeleton) -> float:
    """How much larger the person is in the original than in its T-pose edit (head width, shoulder width)."""
    head = [BODY[name] for name in HEAD_POINTS]
    head_width = original.body[head, 0].max() - original.body[head, 0].min()
    head_width_edit = edited.body[head, 0].max() - edited.body[head, 0].min()
    shoulder, shoulder_edit = (_shoulder_width(skeleton) for skeleton in (original, edited))
    candidates = [a / b for a, b in ((head_width, head_width_edit), (shoulder, shoulder_edit)) if b > 0]
    return max(candidates) if candidates else 1.0


def _scaled_canvas(skeleton: _Skeleton, scale: float) -> _Skeleton:
    return _Skeleton(skeleton.body, int(skeleton.height * scale), int(skeleton.width * scale))


def limb_ratios(driving: _Skeleton, reference: _Skeleton, driving_tpose: _Skeleton | None,
                reference_tpose: _Skeleton | None, scale: float) -> np.ndarray:
    """[19] reference / driving bone-length ratios, harmonised between left and right."""
    if driving_tpose is None:
        driving_lengths = bone_lengths(driving.body, driving.height, driving.width)
        reference_scaled = _scaled_canvas(reference, scale)
        reference_lengths = bone_lengths(reference_scaled.body, reference_scaled.height, reference_scaled.width)
        correction = 1.0
    else:
        edit_scale, fell_back = height_scale(driving_tpose, reference_tpose)
        correction_driving = _edit_scale_correction(driving, driving_tpose) if fell_back else 1
        correction_reference = _edit_scale_correction(reference, reference_tpose) if fell_back else 1
        reference_scaled = _scaled_canvas(reference_tpose, edit_scale)
        driving_lengths = bone_lengths(driving_tpose.body, driving_tpose.height, driving_tpose.width)
        reference_lengths = bone_lengths(reference_scaled.body, reference_scaled.height, reference_scaled.width)
        reference_lengths = reference_lengths * correction_reference
        correction = correction_driving
    usable = driving_lengths > 0
    ratios = np.ones(len(driving_lengths))
    ratios[usable] = 1.0 * reference_lengths[usable] / driving_lengths[usable] / correction
    ratios = fill_unusable_ratios(ratios, usable)
    return harmonize_ratios(ratios)


@dataclass
class _Anchor:
    """Offset (pixels at the driving scale) from the re-proportioned driving skeleton to the reference's place."""

    dx: float
    dy: float
    ground_x: float     # x of the driving anchor (hips centre or neck) after re-proportioning the first frame
    extent: int


def anchor_offset(driving: _Skeleton, reference: _Skeleton, ratios: np.ndarray, scale: float) -> _Anchor:
    extent = min(body_extent(reference.body, EXTENT_SCORE), body_extent(driving.body, EXTENT_SCORE))
    driving_px = driving.body.copy()
    driving_px[:, 0] *= driving.width
    driving_px[:, 1] *= driving.height
    proportioned = scale_limbs(driving_px, ratios, limit_feet=False)
    ref = reference.body
    ref_height, ref_width = int(reference.height * scale), int(reference.width * scale)
    if extent == FULL_BODY:
        # Ground: the lower of the two ankle-toe midpoints; horizontal anchor: the centre of the hips.
        right_foot = (ref[BODY["right_ankle"], 1] + ref[BODY["right_toe"], 1]) / 2
        left_foot = (ref[BODY["left_ankle"], 1] + ref[BODY["left_toe"], 1]) / 2
        reference_ground_y = max(left_foot, right_foot) * ref_height
        driving_ground_y = max(proportioned[BODY["right_ankle"], 1], proportioned[BODY["left_ankle"], 1])
        reference_ground_x = (ref[BODY["right_hip"], 0] + ref[BODY["left_hip"], 0]) * ref_width / 2
        driving_ground_x = (proportioned[BODY["right_hip"], 0] + proportioned[BODY["left_hip"], 0]) / 2
        return _Anchor(driving_ground_x - reference_ground_x, driving_ground_y - reference_ground_y,
                       driving_ground_x, extent)
    neck = BODY["neck"]
    return _Anchor(proportioned[neck, 0] - ref[neck, 0] * ref_width, proportioned[neck, 1] - ref[neck, 1] * ref_height,
                   proportioned[neck, 0], extent)


def _scaled_hand(hand: np.ndarray, ratio: float) -> np.ndarray:
    """Scale a normalised [21, 3] hand about its root point; points under HAND_KEEP_SCORE become ABSENT."""
    root_shift = hand[0, :2] * (ratio - 1)
    scaled = hand.copy()
    scaled[:, :2] = hand[:, :2] * ratio - root_shift
    dropped = hand[:, 2] < HAND_KEEP_SCORE
    scaled[dropped] = (ABSENT, ABSENT, 0.0)
    return scaled


def _place_hand(hand: np.ndarray, shift: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Normalised scaled hand -> pixels moved by `shift`, truncated to integers; dropped points NaN."""
    height, width = size
    placed = np.full((len(hand), 3), np.nan)
    for index, (x, y, score) in enumerate(hand):
        if score == 0:
            placed[index, 2] = 0.0
            continue
        placed[index] = (int(x * width + shift[0]), int(y * height + shift[1]), score)
    return placed


def _retarget_hands(pose: NormalizedPose, driving_px: np.ndarray, moved_px: np.ndarray, ratio: float,
                    size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Hands of one frame in reference pixels: (output left, output right), see the module docstring."""
    height, width = size
    right_wrist, left_wrist = BODY["right_wrist"], BODY["left_wrist"]
    hand_at_right = _scaled_hand(pose.right_hand.astype(np.float64), ratio)  # COCO right hand
    hand_at_left = _scaled_hand(pose.left_hand.astype(np.float64), ratio)    # COCO left hand
    shift_right = moved_px[right_wrist, :2] - driving_px[right_wrist, :2]
    shift_left = moved_px[left_wrist, :2] - driving_px[left_wrist, :2]
    if hand_at_right[0, 0] != ABSENT:
        shift_right += np.array((driving_px[right_wrist, 0] - hand_at_right[0, 0] * width,
                                 driving_px[right_wrist, 1] - hand_at_right[0, 1] * height))
    if hand_at_left[0, 0] != ABSENT:
        shift_left += np.array((driving_px[left_wrist, 0] - hand_at_left[0, 0] * width,
                                driving_px[left_wrist, 1] - hand_at_left[0, 1] * height))
    root = hand_at_right[0, :2] * (width, height)
    to_right_wrist = ((driving_px[right_wrist, 0] - root[0]) ** 2 + (driving_px[right_wrist, 1] - root[1]) ** 2) ** 0.5
    to_left_wrist = ((driving_px[left_wrist, 0] - root[0]) ** 2 + (driving_px[left_wrist, 1] - root[1]) ** 2) ** 0.5
    if to_right_wrist > to_left_wrist:  # the detector swapped the hands: each follows the other wrist
        return _place_hand(hand_at_left, shift_right, size), _place_hand(hand_at_right, shift_left, size)
    return _place_hand(hand_at_right, shift_right, size), _place_hand(hand_at_left, shift_left, size)


def _retarget_frame(pose: NormalizedPose, frame_index: int, ratios: np.ndarray, anchor: _Anchor, scale: float,
                    ref_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    size = (pose.height, pose.width)
    driving_px = pose.body.astype(np.float64)
    driving_px[:, 0] *= pose.width
    driving_px[:, 1] *= pose.height
    moved = scale_limbs(driving_px, ratios, limit_feet=True)
    dx = anchor.dx
    if frame_index == 0:  # official quirk: only the first frame gets this correction
        if anchor.extent == FULL_BODY:
            dx += (moved[BODY["right_hip"], 0] + moved[BODY["left_hip"], 0]) / 2 - anchor.ground_x
        elif anchor.extent == UPPER_BODY:
            dx += moved[BODY["neck"], 0] - anchor.ground_x
    moved[:, 0] = (moved[:, 0] - dx) / scale
    moved[:, 1] = (moved[:, 1] - anchor.dy) / scale
    ref_height, ref_width = ref_size
    # Official round trip: normalised by the reference size, then multiplied back.
    body = moved.copy()
    body[:, 0] = moved[:, 0] / ref_width * ref_width
    body[:, 1] = moved[:, 1] / ref_height * ref_height
    hand_ratio = max(ratios[SHOULDER_LIMBS[0]], ratios[SHOULDER_LIMBS[1]]) / scale
    left_hand, right_hand = _retarget_hands(pose, driving_px, moved, hand_ratio, size)
    return body, left_hand, right_hand


def retarget_poses(driving_keypoints: np.ndarray, ref_keypoints: np.ndarray, driving_size: tuple[int, int],
                   ref_size: tuple[int, int], tpose_driving: np.ndarray | None = None,
                   tpose_ref: np.ndarray | None = None) -> RetargetedPoses:
    """Adapt driving skeletons to the reference character.

    driving_keypoints [F, 133, 3] in pixels of frames of `driving_size` (height, width); ref_keypoints [133, 3] in
    pixels of the reference image of `ref_size`. tpose_driving / tpose_ref: optional [133, 3] keypoints of the first
    driving frame and of the reference edited into a T-pose (same canvas sizes); when both are given their bone
    lengths set the limb ratios. Returns skeletons in reference pixels.
    """
    driving_keypoints = check_wholebody(driving_keypoints, "driving_keypoints", frames=True)
    ref_keypoints = check_wholebody(ref_keypoints, "ref_keypoints", frames=False)
    driving_size = check_size(driving_size, "driving_size")
    ref_size = check_size(ref_size, "ref_size")
    if (tpose_driving is None) != (tpose_ref is None):
        raise ValueError("tpose_driving and tpose_ref: give both T-pose keypoint sets or neither")

    poses = normalized_video_poses(driving_keypoints, driving_size)
    first = _Skeleton.of(normalized_pose(driving_keypoints[0], driving_size))
    reference = _Skeleton.of(normalized_pose(ref_keypoints, ref_size))
    driving_tpose = reference_tpose = None
    if tpose_driving is not None:
        driving_tpose = _Skeleton.of(normalized_pose(check_wholebody(tpose_driving, "tpose_driving", False),
                                                     driving_size))
        reference_tpose = _Skeleton.of(normalized_pose(check_wholebody(tpose_ref, "tpose_ref", False), ref_size))

    scale, _ = height_scale(first, reference)
    ratios = limb_ratios(first, reference, driving_tpose, reference_tpose, scale)
    anchor = anchor_offset(first, reference, ratios, scale)
    frames = [_retarget_frame(pose, index, ratios, anchor, scale, ref_size) for index, pose in enumerate(poses)]
    body, left_hand, right_hand = (np.stack(parts) for parts in zip(*frames))
    return RetargetedPoses(body, left_hand, right_hand, ref_size)
