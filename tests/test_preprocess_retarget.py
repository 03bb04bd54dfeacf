"""Retargeting on hand-built skeletons: the character's limb lengths and place, hands, missing limbs, T-pose path."""
from __future__ import annotations

import numpy as np
import pytest

from wan_animate.preprocess.keypoints import BODY, BODY_LIMBS, normalized_pose
from wan_animate.preprocess.retarget import retarget_poses
from wan_animate.preprocess.retarget_limbs import harmonize_ratios, scale_limbs


def figure(neck=(200.0, 100.0), shoulder=40.0, upper_arm=60.0, forearm=50.0, torso=120.0, hip=25.0, thigh=80.0,
           shin=75.0, foot=20.0, head=30.0, arm_angle=0.0, score=0.9) -> np.ndarray:
    """[133, 3] COCO-WholeBody keypoints of a person facing the camera (their right side on the image's left)."""
    points = np.zeros((133, 3), dtype=np.float64)
    points[:, 2] = score
    nx, ny = neck
    direction = np.array([np.sin(arm_angle), np.cos(arm_angle)])  # 0: arms hanging down
    for side, sign in (("left", 1.0), ("right", -1.0)):
        offset = 0 if side == "left" else 1
        shoulder_xy = np.array([nx + sign * shoulder, ny])
        elbow_xy = shoulder_xy + upper_arm * direction * (sign, 1)
        wrist_xy = elbow_xy + forearm * direction * (sign, 1)
        hip_xy = np.array([nx + sign * hip, ny + torso])
        knee_xy = hip_xy + (0, thigh)
        ankle_xy = knee_xy + (0, shin)
        points[5 + offset, :2] = shoulder_xy
        points[7 + offset, :2] = elbow_xy
        points[9 + offset, :2] = wrist_xy
        points[11 + offset, :2] = hip_xy
        points[13 + offset, :2] = knee_xy
        points[15 + offset, :2] = ankle_xy
        toes = 17 if side == "left" else 20
        points[toes, :2] = ankle_xy + (sign * foot * 0.6, foot * 0.8)      # big toe
        points[toes + 1, :2] = ankle_xy + (sign * foot * 0.6, foot * 0.8)  # small toe
        points[toes + 2, :2] = ankle_xy + (0, 2)                          # heel
        hand = slice(91, 112) if side == "left" else slice(112, 133)
        fingers = np.arange(21)
        points[hand, 0] = wrist_xy[0] + sign * (fingers % 5) * 2.0
        points[hand, 1] = wrist_xy[1] + fingers * 1.5
    points[0, :2] = (nx, ny - head)
    points[1, :2], points[2, :2] = (nx + 8, ny - head - 6), (nx - 8, ny - head - 6)
    points[3, :2], points[4, :2] = (nx + 16, ny - head - 2), (nx - 16, ny - head - 2)
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    points[23:91, 0] = nx + 18 * np.cos(angles)
    points[23:91, 1] = ny - head + 22 * np.sin(angles)
    return points.astype(np.float32)


def body_lengths(body: np.ndarray) -> np.ndarray:
    return np.array([np.hypot(*(body[a, :2] - body[b, :2])) for a, b in BODY_LIMBS])


def reference_body(keypoints: np.ndarray, size) -> np.ndarray:
    return normalized_pose(keypoints, size).body_pixels()


DRIVING_SIZE, REF_SIZE = (480, 400), (640, 360)


def test_retargeted_limbs_take_the_characters_lengths_and_place():
    driving = figure()[None]
    reference = figure(neck=(180.0, 150.0), shoulder=50.0, upper_arm=90.0, forearm=70.0, torso=140.0, thigh=100.0,
                       shin=95.0, foot=22.0, head=40.0)
    poses = retarget_poses(driving, reference, DRIVING_SIZE, REF_SIZE)
    ours, ref = poses.body[0], reference_body(reference, REF_SIZE)
    np.testing.assert_allclose(body_lengths(ours), body_lengths(ref), rtol=0.01)
    hips = (BODY["right_hip"], BODY["left_hip"])
    assert ours[list(hips), 0].mean() == pytest.approx(ref[list(hips), 0].mean(), abs=0.5)
    # Feet anchoring (official): the lower ankle lands on the reference's lower ankle-toe midpoint.
    ref_foot_mid = max((ref[BODY["right_ankle"], 1] + ref[BODY["right_toe"], 1]) / 2,
                       (ref[BODY["left_ankle"], 1] + ref[BODY["left_toe"], 1]) / 2)
    assert ours[[BODY["right_ankle"], BODY["left_ankle"]], 1].max() == pytest.approx(ref_foot_mid, abs=1.0)
    np.testing.assert_array_equal(ours[:, 2], normalized_pose(driving[0], DRIVING_SIZE).body[:, 2])


def test_moving_limbs_keep_the_characters_lengths_and_the_driving_directions():
    driving = np.stack([figure(), figure(arm_angle=1.2)])
    reference = figure(neck=(180.0, 150.0), upper_arm=90.0, forearm=70.0)
    poses = retarget_poses(driving, reference, DRIVING_SIZE, REF_SIZE)
    np.testing.assert_allclose(body_lengths(poses.body[1]), body_lengths(poses.body[0]), rtol=1e-6)
    elbow, wrist = BODY["left_elbow"], BODY["left_wrist"]
    moved = poses.body[1, wrist, :2] - poses.body[1, elbow, :2]
    driven = driving[1, 9, :2] - driving[1, 7, :2]
    assert np.dot(moved, driven) / (np.linalg.norm(moved) * np.linalg.norm(driven)) == pytest.approx(1.0, abs=1e-6)


def test_hands_follow_their_wrists_and_drop_low_scores():
    driving = figure()
    driving[112 + 20, 2] = 0.1  # right hand's little finger tip
    poses = retarget_poses(driving[None], figure(neck=(180.0, 150.0), forearm=80.0), DRIVING_SIZE, REF_SIZE)
    right_wrist_xy = poses.body[0, BODY["right_wrist"], :2]
    # The official output's "left hand" slot holds the hand placed at body point 4 (the right wrist).
    assert np.abs(poses.left_hand[0, 0, :2] - right_wrist_xy).max() <= 1.0
    assert np.abs(poses.right_hand[0, 0, :2] - poses.body[0, BODY["left_wrist"], :2]).max() <= 1.0
    assert np.isnan(poses.left_hand[0, 20, :2]).all() and poses.left_hand[0, 20, 2] == 0
    assert np.isfinite(poses.left_hand[0, :20]).all() and np.isfinite(poses.right_hand[0]).all()
    assert np.array_equal(poses.left_hand[0, :20, :2], np.trunc(poses.left_hand[0, :20, :2]))


def test_missing_legs_anchor_at_the_neck_and_keep_arm_lengths():
    driving = figure()
    legs = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22]
    driving[legs, 2] = 0.05
    driving[legs, 1] += 600  # below the frame, as a cropped-out detection
    reference = figure(neck=(180.0, 150.0), upper_arm=90.0, forearm=70.0)
    poses = retarget_poses(driving[None], reference, DRIVING_SIZE, REF_SIZE)
    ours, ref = poses.body[0], reference_body(reference, REF_SIZE)
    assert np.isfinite(ours).all()
    assert np.abs(ours[BODY["neck"], :2] - ref[BODY["neck"], :2]).max() <= 1.0
    arms = [2, 3, 4, 5]  # upper arms and forearms in BODY_LIMBS
    np.testing.assert_allclose(body_lengths(ours)[arms], body_lengths(ref)[arms], rtol=0.02)


def test_all_zero_score_frames_do_not_crash():
    driving = np.stack([figure(), np.zeros((133, 3), np.float32), figure(arm_angle=0.5)])
    poses = retarget_poses(driving, figure(neck=(180.0, 150.0)), DRIVING_SIZE, REF_SIZE)
    assert np.isfinite(poses.body).all() and poses.body.shape == (3, 20, 3)
    assert np.isnan(poses.left_hand[1, :, :2]).all() and (poses.left_hand[1, :, 2] == 0).all()
    assert poses.render().shape == (3, *REF_SIZE, 3)
    # An all-zero first frame or reference: the official code divides by zero; here everything stays finite.
    zeros = np.zeros((133, 3), np.float32)
    for first, reference in ((zeros, figure()), (figure(), zeros), (zeros, zeros)):
        poses = retarget_poses(np.stack([first, figure()]), reference, DRIVING_SIZE, REF_SIZE)
        assert np.isfinite(poses.body).all()
        assert poses.render().dtype == np.uint8


def test_tpose_path_equals_plain_path_when_tposes_are_the_same_pictures():
    driving = np.stack([figure(), figure(arm_angle=0.8)])
    reference = figure(neck=(180.0, 150.0), upper_arm=90.0, forearm=70.0, thigh=100.0)
    plain = retarget_poses(driving, reference, DRIVING_SIZE, REF_SIZE)
    tpose = retarget_poses(driving, reference, DRIVING_SIZE, REF_SIZE, tpose_driving=driving[0], tpose_ref=reference)
    np.testing.assert_allclose(tpose.body, plain.body, atol=1e-9)
    np.testing.assert_array_equal(np.isnan(tpose.left_hand), np.isnan(plain.left_hand))


def test_tpose_bone_lengths_set_the_ratios():
    driving = figure()[None]
    reference = figure(neck=(180.0, 150.0))
    # The T-pose edits say the character's forearms are twice the driving person's.
    tpose_driving = figure(arm_angle=np.pi / 2)
    tpose_ref = figure(neck=(180.0, 150.0), forearm=100.0, arm_angle=np.pi / 2)
    poses = retarget_poses(driving, reference, DRIVING_SIZE, REF_SIZE, tpose_driving, tpose_ref)
    forearm = BODY_LIMBS.index((BODY["right_elbow"], BODY["right_wrist"]))
    lengths, ref_lengths = body_lengths(poses.body[0]), body_lengths(reference_body(reference, REF_SIZE))
    assert lengths[forearm] == pytest.approx(2 * ref_lengths[forearm], rel=0.02)
    assert lengths[forearm - 1] == pytest.approx(ref_lengths[forearm - 1], rel=0.02)


def test_limb_helpers():
    ratios = np.arange(19, dtype=float)
    harmonized = harmonize_ratios(ratios)
    assert harmonized[0] == harmonized[1] == 1 and harmonized[17] == harmonized[18] == 18
    assert harmonized[13] == harmonized[15] == 14 and harmonized[14] == harmonized[16] == 15
    body = np.zeros((20, 3))
    body[:, :2] = np.random.default_rng(0).uniform(0, 100, (20, 2))
    np.testing.assert_allclose(scale_limbs(body, np.ones(19), limit_feet=False), body, atol=1e-9)
    doubled = scale_limbs(body, np.full(19, 2.0), limit_feet=False)
    np.testing.assert_allclose(body_lengths(doubled), 2 * body_lengths(body), rtol=1e-9)
    assert (doubled[BODY["neck"]] == body[BODY["neck"]]).all()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="tpose_driving and tpose_ref"):
        retarget_poses(figure()[None], figure(), DRIVING_SIZE, REF_SIZE, tpose_driving=figure())
    with pytest.raises(ValueError, match="driving_keypoints"):
        retarget_poses(figure(), figure(), DRIVING_SIZE, REF_SIZE)
    with pytest.raises(ValueError, match="ref_size"):
        retarget_poses(figure()[None], figure(), DRIVING_SIZE, (0, 10))
