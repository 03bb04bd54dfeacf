"""Golden parity of the preprocessing after the pose model: face boxes and crops, skeleton renders, retargeting.

Tolerances (golden README, section preprocess/): face boxes within 1 px; where a box matches exactly, the crop within
1 grey level; renders: of the skeleton pixels (non-black in either picture) at most 2% differ, a pixel differing when
any channel is off by more than 8; retargeted keypoints within 0.5 px with NaN in the same places.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import golden_section
from PIL import Image

from wan_animate.preprocess.face_crop import crop_faces, detect_face_boxes
from wan_animate.preprocess.render import render_animate_poses, render_replace_poses
from wan_animate.preprocess.retarget import retarget_poses

BOX_TOLERANCE_PX = 1
CROP_TOLERANCE = 1
RENDER_CHANNEL_TOLERANCE = 8
RENDER_MAX_DIFFERING = 0.02
KEYPOINT_TOLERANCE_PX = 0.5


@pytest.fixture(scope="module")
def golden():
    from safetensors.numpy import load_file

    folder = golden_section("preprocess")
    inputs = load_file(str(folder / "inputs.safetensors"))
    outputs = load_file(str(folder / "outputs.safetensors"))
    frames = inputs["frames_u8"]
    return {
        **inputs,
        **outputs,
        "frame_size": frames.shape[1:3],
        "ref_size": inputs["ref_u8"].shape[:2],
    }


def render_mismatch(ours: np.ndarray, golden: np.ndarray) -> tuple[float, int]:
    """Worst per-frame share of skeleton pixels that differ, and the frame it occurs in."""
    skeleton = (ours.max(axis=-1) > 0) | (golden.max(axis=-1) > 0)  # [F, H, W]
    differs = np.abs(ours.astype(np.int16) - golden.astype(np.int16)).max(axis=-1) > RENDER_CHANNEL_TOLERANCE
    shares = differs.sum(axis=(1, 2)) / np.maximum(skeleton.sum(axis=(1, 2)), 1)
    worst = int(np.argmax(shares))
    return float(shares[worst]), worst


def save_side_by_side(path, golden: np.ndarray, ours: np.ndarray) -> None:
    """PNG of golden | ours | per-pixel absolute difference."""
    difference = np.abs(ours.astype(np.int16) - golden.astype(np.int16)).astype(np.uint8)
    Image.fromarray(np.concatenate([golden, ours, difference], axis=1)).save(path)


def assert_render_matches(ours: np.ndarray, golden: np.ndarray, name: str, tmp_path) -> None:
    assert ours.shape == golden.shape and ours.dtype == np.uint8, f"{name}: {ours.dtype} {ours.shape} != {golden.shape}"
    share, frame = render_mismatch(ours, golden)
    if share > RENDER_MAX_DIFFERING:
        picture = tmp_path / f"{name}_frame{frame}.png"
        save_side_by_side(picture, golden[frame], ours[frame])
        pytest.fail(f"{name}: frame {frame} has {share:.2%} of skeleton pixels differing "
                    f"(> {RENDER_MAX_DIFFERING:.0%}); golden | ours | difference saved to {picture}")


def test_preprocess_golden_face_boxes_and_crops(golden):
    found = detect_face_boxes(golden["keypoints"], golden["frame_size"], scale=1.3)
    boxes = found.boxes
    assert boxes.shape == golden["face_boxes"].shape
    box_error = np.abs(boxes.astype(np.int64) - golden["face_boxes"]).max()
    assert box_error <= BOX_TOLERANCE_PX, f"face boxes off by {box_error} px (tolerance {BOX_TOLERANCE_PX})"
    crops = crop_faces(golden["frames_u8"], boxes)
    assert crops.shape == golden["face_u8"].shape and crops.dtype == np.uint8
    exact = np.all(boxes == golden["face_boxes"], axis=1)
    assert exact.any(), "no face box matches the golden box exactly, so no crop can be compared"
    crop_error = np.abs(crops[exact].astype(np.int16) - golden["face_u8"][exact]).max()
    assert crop_error <= CROP_TOLERANCE, f"face crops off by {crop_error} grey levels (tolerance {CROP_TOLERANCE})"


def retargeted(golden, tpose: bool):
    tposes = {"tpose_driving": golden["tpose_keypoints"], "tpose_ref": golden["ref_tpose_keypoints"]} if tpose else {}
    return retarget_poses(golden["keypoints"], golden["ref_keypoints"], golden["frame_size"], golden["ref_size"],
                          **tposes)


@pytest.mark.parametrize("kind", ["pose_u8", "pose_replace_u8", "pose_retarget_u8", "pose_retarget_tpose_u8"])
def test_preprocess_golden_renders(golden, kind, tmp_path):
    keypoints, frame_size, ref_size = golden["keypoints"], golden["frame_size"], golden["ref_size"]
    if kind == "pose_u8":
        ours = render_animate_poses(keypoints, frame_size, ref_size)
    elif kind == "pose_replace_u8":
        ours = render_replace_poses(keypoints, frame_size)
    else:
        ours = retargeted(golden, tpose=kind == "pose_retarget_tpose_u8").render()
    assert_render_matches(ours, golden[kind], kind, tmp_path)


@pytest.mark.parametrize("tpose", [False, True], ids=["plain", "tpose"])
def test_preprocess_golden_retarget_keypoints(golden, tpose):
    poses = retargeted(golden, tpose)
    prefix = "retarget_tpose_" if tpose else "retarget_"
    for part in ("body", "left_hand", "right_hand"):
        expected = golden[prefix + part].astype(np.float64)
        ours = getattr(poses, part)
        assert ours.shape == expected.shape, f"{prefix}{part}: shape {ours.shape} != golden {expected.shape}"
        nan_ours, nan_golden = np.isnan(ours), np.isnan(expected)
        assert np.array_equal(nan_ours, nan_golden), (
            f"{prefix}{part}: NaN (dropped points) at {np.argwhere(nan_ours != nan_golden)[:5].tolist()} differ")
        error = np.abs(ours - expected)[..., :2][~nan_golden[..., :2]].max(initial=0.0)
        assert error <= KEYPOINT_TOLERANCE_PX, f"{prefix}{part}: off by {error:.3f} px (> {KEYPOINT_TOLERANCE_PX})"
        score_error = np.abs(ours - expected)[..., 2][~nan_golden[..., 2]].max(initial=0.0)
        assert score_error <= 1e-6, f"{prefix}{part}: scores off by {score_error:.2e}"
