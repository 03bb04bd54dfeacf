"""ViTPose crop and heatmap decoding, the whole frames -> keypoints path through onnxruntime, and smoothing."""
import numpy as np
import pytest

from onnx_fixtures import FIXED_PEAKS, export_detector, export_pose_model, fixed_heatmaps
from wan_animate.preprocess.detector import PersonDetector
from wan_animate.preprocess.extract import extract_image_pose, extract_poses
from wan_animate.preprocess.pose_model import WholeBodyPoseModel, crop_person, crop_window, decode_heatmaps
from wan_animate.preprocess.smoothing import smooth_keypoints

INPUT_HW = (256, 192)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pose")
    return {
        "detector": export_detector(folder / "det.onnx", batch=1),
        "pose": export_pose_model(folder / "pose.onnx"),
        "pose_fixed1": export_pose_model(folder / "pose1.onnx", batch=1),
        "pose_fixed3": export_pose_model(folder / "pose3.onnx", batch=3),
        "pose_weak": export_pose_model(folder / "weak.onnx", peak_scale=0.1),
    }


def expected_fixed_points(box):
    """Where the fixture's fixed heatmap peaks land in the frame for a person box (x1, y1, x2, y2)."""
    centre, size = crop_window(np.asarray(box, float), (480, 640), INPUT_HW)
    cells = np.array([INPUT_HW[1] / 4, INPUT_HW[0] / 4])
    return FIXED_PEAKS[:, :2] * size / cells + centre - size / 2


def test_crop_window_pads_box_to_three_by_four():
    centre, size = crop_window(np.array([200, 100, 260, 300.]), (480, 640), INPUT_HW)
    assert centre.tolist() == [230, 200]
    assert size.tolist() == pytest.approx([187.5, 250])  # side max(60 * 4/3, 200) = 200, x 1.25
    centre, size = crop_window(np.array([0, 0, 300, 9.]), (480, 640), INPUT_HW)  # under 10 px: whole frame
    assert centre.tolist() == [320, 240] and size.tolist() == pytest.approx([800, 1066.6666667])
    centre_nan, _ = crop_window(np.full(4, np.nan), (480, 640), INPUT_HW)
    assert centre_nan.tolist() == [320, 240]


def test_crop_person_cuts_the_window_and_fills_outside_with_zeros():
    frame = np.random.default_rng(0).integers(1, 255, (480, 640, 3), dtype=np.uint8)
    # a 256-pixel-high window at scale 1: the crop is exactly frame[72:328, 204:396]
    box = np.array([300 - 50, 200 - 102.4, 300 + 50, 200 + 102.4])
    centre, size = crop_window(box, frame.shape[:2], INPUT_HW)
    crop = crop_person(frame, centre, size, INPUT_HW)
    assert crop.dtype == np.float32 and np.array_equal(crop, frame[72:328, 204:396])
    corner = crop_person(frame, np.array([10.0, 20.0]), size, INPUT_HW)  # window from (-86, -108)
    assert (corner[:108] == 0).all() and (corner[:, :86] == 0).all()
    assert np.array_equal(corner[108:, 86:], frame[:148, :106])


def test_prepare_reverses_channels_like_the_official_pipeline(models):
    red = np.zeros((1, 64, 48, 3), np.uint8)
    red[..., 0] = 255
    bgr, _, _ = WholeBodyPoseModel(models["pose"]).prepare(red[0], None)
    rgb, _, _ = WholeBodyPoseModel(models["pose"], channel_order="rgb").prepare(red[0], None)
    # the red frame fills the middle of the whole-frame window
    assert bgr[0, 128, 96] == pytest.approx((0 - 0.485) / 0.229, abs=1e-6)
    assert bgr[2, 128, 96] == pytest.approx((1 - 0.406) / 0.225, abs=1e-6)
    assert rgb[0, 128, 96] == pytest.approx((1 - 0.485) / 0.229, abs=1e-6)


def test_decoding_an_integer_peak_maps_through_the_window():
    heatmaps = np.zeros((1, 2, 64, 48), np.float32)
    ys, xs = np.mgrid[0:64, 0:48]
    heatmaps[0, 0] = 0.8 * np.exp(-((xs - 20) ** 2 + (ys - 30) ** 2) / 8.0)
    heatmaps[0, 1] = -1.0  # no positive response
    points = decode_heatmaps(heatmaps, np.array([[230.0, 200.0]]), np.array([[187.5, 250.0]]))
    assert points.shape == (1, 2, 3) and points.dtype == np.float32
    assert points[0, 0].tolist() == pytest.approx([20 * 187.5 / 48 + 230 - 93.75, 30 * 250 / 64 + 200 - 125, 0.8],
                                                  abs=1e-4)
    assert points[0, 1, :2].tolist() == pytest.approx([-187.5 / 48 + 136.25, -250 / 64 + 75])  # cell -1
    assert points[0, 1, 2] == -1.0


def test_dark_refinement_recovers_sub_cell_peaks():
    heatmaps = fixed_heatmaps()[None]  # [1, 132, 64, 48] Gaussians at fractional cells
    points = decode_heatmaps(heatmaps, np.array([[24.0, 32.0]]), np.array([[48.0, 64.0]]))  # 1 px per cell
    assert np.abs(points[0, :, :2] - FIXED_PEAKS[:, :2]).max() < 0.02
    assert np.abs(points[0, :, 2] - heatmaps.reshape(132, -1).max(axis=1)).max() < 1e-6


def scene(frames=4):
    """480 x 640 frames: a red 'person' (detector class 0) with a soft green blob inside it that moves."""
    out = np.zeros((frames, 480, 640, 3), np.uint8)
    ys, xs = np.mgrid[0:480, 0:640]
    blobs = []
    for t in range(frames):
        out[t, 100:300, 200:260, 0] = 255
        bx, by = 225.0 + 3 * t, 180.0 + 5 * t
        out[t, ..., 1] = np.round(110 * np.exp(-((xs - bx) ** 2 + (ys - by) ** 2) / (2 * 15.0 ** 2)))
        blobs.append((bx, by))
    return out, np.array(blobs)


def test_extract_poses_end_to_end(models):
    frames, blobs = scene()
    progress = []
    seq = extract_poses(frames, PersonDetector(models["detector"]), WholeBodyPoseModel(models["pose"]),
                        progress=lambda done, total: progress.append((done, total)), chunk=3)
    assert seq.keypoints.shape == (4, 133, 3) and seq.keypoints.dtype == np.float32
    assert seq.person_found.all() and seq.frame_size == (480, 640)
    # the 480-row frame is stretched to 640 rows for the detector; the box comes back truncated to whole pixels
    assert np.array_equal(seq.boxes, np.tile([200, 99, 260, 299], (4, 1)))
    assert np.abs(seq.keypoints[:, :132, :2] - expected_fixed_points(seq.boxes[0])).max() < 0.1
    assert np.abs(seq.keypoints[:, :132, 2] - FIXED_PEAKS[:, 2]).max() < 0.05
    # the content-driven map follows the green blob: within one heatmap cell (~4 px here)
    assert np.abs(seq.keypoints[:, 132, :2] - blobs).max() < 250 / 64
    assert progress == [(3, 8), (4, 8), (7, 8), (8, 8)]


def test_fixed_and_dynamic_pose_batches_agree(models):
    frames, _ = scene(5)
    detector = PersonDetector(models["detector"])
    results = [extract_poses(frames, detector, WholeBodyPoseModel(models[name], batch_size=2)).keypoints
               for name in ("pose", "pose_fixed1", "pose_fixed3")]
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], results[2])


def test_frames_without_the_person_reuse_the_last_box_or_the_whole_frame(models):
    frames, _ = scene(3)
    frames[1, ..., 0] = 0  # nobody detected in frame 1
    detector, pose = PersonDetector(models["detector"]), WholeBodyPoseModel(models["pose"])
    carried = extract_poses(frames, detector, pose)
    assert carried.person_found.tolist() == [True, False, True]
    assert np.array_equal(carried.boxes[1], carried.boxes[0])
    whole = extract_poses(frames, detector, pose, carry_over=False)
    assert np.allclose(whole.boxes[1], [0, 0, 640, 480])
    assert np.abs(whole.keypoints[1, :132, :2] - expected_fixed_points([0, 0, 640, 480])).max() < 0.1


def test_extract_errors_name_the_problem(models):
    detector, pose = PersonDetector(models["detector"]), WholeBodyPoseModel(models["pose"])
    with pytest.raises(ValueError, match="0 frames"):
        extract_poses(np.zeros((0, 64, 64, 3), np.uint8), detector, pose)
    with pytest.raises(ValueError, match="no person was detected in any of the 2 frames"):
        extract_poses(np.zeros((2, 64, 64, 3), np.uint8), detector, pose)
    with pytest.raises(ValueError, match="uint8"):
        extract_poses(np.zeros((2, 64, 64, 3), np.float32), detector, pose)


def test_character_image_pose(models):
    frames, _ = scene(1)
    detector = PersonDetector(models["detector"])
    seq = extract_image_pose(frames[0], detector, WholeBodyPoseModel(models["pose"]))
    assert seq.keypoints.shape == (1, 133, 3) and seq.person_found.tolist() == [True]
    with pytest.raises(ValueError, match="no pose could be detected in the character image"):
        extract_image_pose(frames[0], detector, WholeBodyPoseModel(models["pose_weak"]))


def track(frames=120, step_at=60, step=80.0, noise=2.0, seed=0):
    rng = np.random.default_rng(seed)
    clean = np.zeros((frames, 133, 3), np.float32)
    clean[..., 0] = 300 + (np.arange(133) % 10) * 20 + 20 * np.sin(np.arange(frames) / 10)[:, None]
    clean[..., 1] = 200 + (np.arange(133) % 7) * 30
    clean[..., 2] = 0.9
    clean[step_at:, :, 0] += step
    noisy = clean.copy()
    noisy[..., :2] += rng.normal(0, noise, (frames, 133, 2))
    return clean, noisy


def test_smoothing_off_returns_an_unchanged_copy():
    _, noisy = track()
    out = smooth_keypoints(noisy, 0.0)
    assert out is not noisy and np.array_equal(out, noisy)
    with pytest.raises(ValueError, match="strength"):
        smooth_keypoints(noisy, 1.5)


def test_smoothing_reduces_jitter_and_keeps_a_step():
    clean, noisy = track()
    steady = np.r_[5:55, 65:115]
    raw_rms = np.sqrt(((noisy - clean)[steady, :, :2] ** 2).mean())
    errors = []
    for strength in (0.5, 1.0):
        smoothed = smooth_keypoints(noisy, strength)
        errors.append(np.sqrt(((smoothed - clean)[steady, :, :2] ** 2).mean()) / raw_rms)
        # around the 80-pixel step no frame is pulled more than 5 px towards the other side
        assert np.abs(smoothed[57:63, :, 0] - clean[57:63, :, 0]).mean(axis=1).max() < 5.0
        assert np.array_equal(smoothed[..., 2], noisy[..., 2])
    assert errors[0] < 0.6 and errors[1] < errors[0]


def test_low_confidence_points_neither_move_nor_pull_neighbours():
    points = np.zeros((9, 1, 3), np.float32)
    points[..., 0], points[..., 1], points[..., 2] = 100.0, 50.0, 0.9
    points[4] = [500.0, 500.0, 0.1]  # an outlier the detector was unsure about
    out = smooth_keypoints(points, 1.0)
    assert out[4, 0].tolist() == [500.0, 500.0, pytest.approx(0.1)]
    assert np.allclose(out[[0, 1, 2, 3, 5, 6, 7, 8], 0, :2], [100.0, 50.0])
