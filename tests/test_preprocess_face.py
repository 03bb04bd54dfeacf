"""Face boxes (official maths, missing-face handling) and 512x512 face crops."""
from __future__ import annotations

import numpy as np
import pytest

from wan_animate.preprocess.face_crop import (
    crop_faces,
    detect_face_boxes,
    face_box,
    face_boxes,
)
from wan_animate.preprocess.keypoints import FACE_POINTS


def keypoints_with_face(x_range, y_range, frames=1, score=0.9) -> np.ndarray:
    """[frames, 133, 3] with the 68 face points spread over a rectangle; everything else at score 0."""
    keypoints = np.zeros((frames, 133, 3), dtype=np.float32)
    xs = np.linspace(*x_range, 68)
    ys = np.linspace(*y_range, 68)[::-1]
    keypoints[:, FACE_POINTS, 0] = xs
    keypoints[:, FACE_POINTS, 1] = ys
    keypoints[:, FACE_POINTS, 2] = score
    return keypoints


def test_face_box_grows_area_by_scale_with_forehead_room():
    # 40 x 50 face: area 2000 -> 2600, same aspect: 45.607 x 57.009; width +2.80 each side, height +1.75 down, +5.26 up.
    box = face_box(np.array([[100.0, 200.0], [140.0, 250.0]]), (480, 640), scale=1.3)
    assert box == (97, 142, 194, 251)


def test_face_box_is_clipped_to_the_frame():
    box = face_box(np.array([[2.0, 3.0], [60.0, 70.0]]), (64, 58), scale=1.3)
    assert box[0] == 0 and box[2] == 0 and box[1] == 58 and box[3] == 64


def test_face_boxes_reads_the_face_points_in_pixels():
    keypoints = keypoints_with_face((100.0, 140.0), (200.0, 250.0), frames=2)
    boxes = face_boxes(keypoints, (480, 640))
    assert boxes.dtype == np.int32 and boxes.shape == (2, 4)
    assert boxes.tolist() == [[97, 142, 194, 251]] * 2


def test_frames_without_face_reuse_the_nearest_box_and_are_counted():
    keypoints = np.concatenate([
        keypoints_with_face((100.0, 140.0), (200.0, 250.0)),
        keypoints_with_face((0.0, 0.0), (0.0, 0.0), score=0.0),       # nothing found, all zeros
        keypoints_with_face((10.0, 90.0), (10.0, 90.0), score=0.05),  # low scores
        keypoints_with_face((300.0, 340.0), (100.0, 150.0)),
    ])
    found = detect_face_boxes(keypoints, (480, 640))
    assert found.missing.tolist() == [False, True, True, False]
    assert found.missing_count == 2
    assert found.boxes[1].tolist() == found.boxes[0].tolist()
    assert found.boxes[2].tolist() == found.boxes[3].tolist()


def test_no_face_anywhere_falls_back_to_the_whole_frame():
    found = detect_face_boxes(np.zeros((3, 133, 3), dtype=np.float32), (48, 64))
    assert found.missing_count == 3
    assert found.boxes.tolist() == [[0, 64, 0, 48]] * 3


def test_crop_faces_resizes_each_box_to_512():
    frames = np.zeros((2, 60, 80, 3), dtype=np.uint8)
    frames[0, 10:30, 20:50] = (200, 100, 50)
    frames[1, :, :40] = 255
    crops = crop_faces(frames, np.array([[20, 50, 10, 30], [0, 40, 0, 60]]))
    assert crops.shape == (2, 512, 512, 3) and crops.dtype == np.uint8
    assert np.all(crops[0] == (200, 100, 50))
    assert np.all(crops[1] == 255)


def test_crop_faces_rejects_empty_boxes_and_bad_shapes():
    frames = np.zeros((1, 60, 80, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="empty"):
        crop_faces(frames, np.array([[10, 10, 0, 20]]))
    with pytest.raises(ValueError, match="one per frame"):
        crop_faces(frames, np.zeros((2, 4), dtype=int))
    with pytest.raises(ValueError, match="133"):
        face_boxes(np.zeros((2, 17, 3)), (60, 80))


def test_face_wholly_above_the_frame_counts_as_missing():
    keypoints = np.concatenate([
        keypoints_with_face((100.0, 140.0), (-90.0, -40.0)),  # official box would be (.., 0, negative): empty
        keypoints_with_face((100.0, 140.0), (200.0, 250.0)),
    ])
    found = detect_face_boxes(keypoints, (480, 640))
    assert found.missing.tolist() == [True, False]
    assert found.boxes[0].tolist() == [97, 142, 194, 251]


def test_a_video_without_any_face_is_refused_by_name():
    keypoints = np.zeros((3, 133, 3), np.float32)  # nothing scores: no face anywhere
    boxes = detect_face_boxes(keypoints, (64, 64))
    assert boxes.missing_count == 3
    with pytest.raises(ValueError, match="no face was found in any of the 3 frames of the driving video"):
        boxes.require_faces("driving video")
