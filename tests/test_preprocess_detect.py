"""Person detection through onnxruntime, batching of fixed/dynamic models, main-person choice and tracking."""
import numpy as np
import pytest

from onnx_fixtures import export_detector
from wan_animate.preprocess.detector import PersonDetector
from wan_animate.preprocess.onnx_session import OnnxModel, choose_providers
from wan_animate.preprocess.tracking import (box_iou, official_per_frame_choice, select_main_person,
                                             track_main_person)


@pytest.fixture(scope="module")
def detector_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("det")
    return {batch: export_detector(folder / f"det_{batch}.onnx", batch=batch) for batch in (None, 1, 4)}


def paint(frame, x0, y0, x1, y1, channel):
    frame[y0:y1, x0:x1, channel] = 255


def test_providers_fall_back_to_cpu():
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="device"):
        choose_providers("tpu")


def test_missing_model_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.onnx"):
        OnnxModel(tmp_path / "nothing.onnx")


def test_model_batch_dimension_is_read(detector_files):
    assert OnnxModel(detector_files[None]).fixed_batch is None
    assert OnnxModel(detector_files[1]).fixed_batch == 1
    fixed4 = OnnxModel(detector_files[4])
    assert fixed4.fixed_batch == 4 and fixed4.input_hw == (640, 640)


def test_released_session_is_reopened_with_the_same_results(detector_files):
    """release() ends the onnxruntime session (its CUDA arena is freed only with it); the next call reopens it."""
    detector = PersonDetector(detector_files[None])
    frames = np.zeros((2, 640, 640, 3), np.uint8)
    paint(frames[1], 100, 50, 180, 300, 0)
    before = detector.detect(frames)
    detector.release()
    assert detector.model.session is None and detector.model.providers == ["CPUExecutionProvider"]
    after = detector.detect(frames)
    assert detector.model.session is not None
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_fixed_and_dynamic_batches_give_the_same_boxes(detector_files):
    frames = np.zeros((6, 640, 640, 3), np.uint8)
    for i in range(6):
        paint(frames[i], 100 + 10 * i, 50, 180 + 10 * i, 300, 0)
    results = {batch: PersonDetector(path, batch_size=4).detect(frames) for batch, path in detector_files.items()}
    for i in range(6):
        expected = [100 + 10 * i, 50, 180 + 10 * i, 300]
        for batch, boxes in results.items():
            assert boxes[i].shape == (1, 5), batch
            assert boxes[i][0, :4].tolist() == expected, batch
            assert boxes[i][0, 4] == pytest.approx(0.9)


def test_boxes_are_scaled_back_from_the_stretched_input(detector_files):
    detector = PersonDetector(detector_files[None])
    frame = np.zeros((640, 1280, 3), np.uint8)  # stretched to 640 x 640: x halves, y unchanged
    paint(frame, 400, 100, 520, 300, 0)
    boxes = detector.detect(frame[None])[0]
    assert boxes[:, :4].tolist() == [[400, 100, 520, 300]]


def test_non_person_classes_are_dropped_and_nms_is_class_agnostic(detector_files):
    detector = PersonDetector(detector_files[None])
    frame = np.zeros((640, 640, 3), np.uint8)
    paint(frame, 10, 10, 60, 60, 2)  # class 2 only
    assert detector.detect(frame[None])[0].shape == (0, 5)
    paint(frame, 300, 100, 400, 400, 0)  # red person 0.9
    paint(frame, 305, 105, 400, 400, 1)  # green person 0.8, IoU > 0.5 with the red one: suppressed
    boxes = detector.detect(frame[None])[0]
    assert boxes[:, :4].tolist() == [[300, 100, 400, 400]]
    frame[:, :, 1] = 0
    paint(frame, 500, 100, 560, 400, 1)  # separate green person: kept, after the higher-scoring red one
    boxes = detector.detect(frame[None])[0]
    assert boxes[:, 4].tolist() == pytest.approx([0.9, 0.8])


def test_detector_rejects_float_frames(detector_files):
    with pytest.raises(ValueError, match="uint8"):
        PersonDetector(detector_files[None]).detect(np.zeros((1, 64, 64, 3), np.float32))


def test_official_choice_prefers_area_but_skips_small_sided_boxes():
    boxes = np.array([[0, 0, 100, 100, .9], [200, 0, 250, 180, .8], [300, 0, 310, 20, .9]], float)
    assert select_main_person(boxes) == 0  # largest area
    thin_tall = np.array([[0, 0, 100, 100, .9], [200, 0, 220, 450, .8]], float)
    # the square's longer side (100) is under 0.4 x 450: skipped although its area (1e4) beats 9e3
    assert select_main_person(thin_tall) == 1
    assert select_main_person(np.zeros((0, 5))) is None


def test_box_iou():
    ious = box_iou(np.array([0, 0, 10, 10.]), np.array([[0, 0, 10, 10.], [5, 0, 15, 10], [20, 20, 30, 30]]))
    assert ious.tolist() == pytest.approx([1.0, 50 / 150, 0.0])


def two_people(frames=10):
    """Person A (index 0 in each list) stays the same size; person B grows past it from frame 5."""
    detections = []
    for t in range(frames):
        a = [100 + 2 * t, 100, 200 + 2 * t, 300, 0.9]
        grow = 20 * t
        b = [400, 150 - grow, 460 + grow, 250 + grow, 0.8]
        detections.append(np.array([a, b], float))
    return detections


def test_tracking_stays_on_the_first_main_person():
    detections = two_people()
    track = track_main_person(detections)
    assert track.found.all()
    assert np.allclose(track.boxes, [d[0, :4] for d in detections])
    official = official_per_frame_choice(detections)
    switched = [t for t in range(10) if np.allclose(official.boxes[t], detections[t][1, :4])]
    assert switched and switched[0] <= 5  # the official choice jumps to the growing person


def test_tracking_carries_the_box_over_missing_frames_and_flags_them():
    detections = two_people(6)
    detections[3] = detections[3][1:]  # person A not detected in frame 3
    track = track_main_person(detections)
    assert track.found.tolist() == [True, True, True, False, True, True]
    assert np.allclose(track.boxes[3], detections[2][0, :4])
    uncarried = track_main_person(detections, carry_over=False)
    assert np.isnan(uncarried.boxes[3]).all() and np.allclose(uncarried.boxes[4], detections[4][0, :4])


def test_tracking_starts_at_first_detection_and_reacquires_after_a_long_loss():
    empty = np.zeros((0, 5))
    a = np.array([[0, 0, 100, 200, .9]])
    elsewhere = np.array([[500, 0, 600, 200, .9]])
    track = track_main_person([empty, a, empty, empty, elsewhere, elsewhere], reacquire_after=1)
    assert np.isnan(track.boxes[0]).all()
    assert track.found.tolist() == [False, True, False, False, True, True]
    assert np.allclose(track.boxes[4], elsewhere[0, :4])
    stubborn = track_main_person([empty, a, empty, empty, elsewhere], reacquire_after=None)
    assert not stubborn.found[4] and np.allclose(stubborn.boxes[4], a[0, :4])


def test_tracking_follows_by_centre_when_boxes_stop_overlapping():
    previous = np.array([[0, 0, 40, 100, .9]])
    jumped = np.array([[45, 0, 85, 100, .9], [300, 0, 340, 100, .9]])  # no overlap, centre moved 45 px
    track = track_main_person([previous, jumped], min_iou=0.1, max_centre_shift=0.5)
    assert track.found.all() and np.allclose(track.boxes[1], jumped[0, :4])
