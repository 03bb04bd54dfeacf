"""Choosing which person of the driving video to follow: largest (official), leftmost, rightmost, index by size,
or a point on the first frame; the choice drives the poses, hence face crops and masks."""
import numpy as np
import pytest
import torch

from onnx_fixtures import export_detector, export_pose_model
from test_nodes_errors import PREPROCESS, character_image, run_node
from wan_animate.preprocess.detector import PersonDetector
from wan_animate.preprocess.extract import extract_poses
from wan_animate.preprocess.pose_model import WholeBodyPoseModel
from wan_animate.preprocess.tracking import (PersonChoice, choose_person, parse_person_choice, select_main_person,
                                             track_main_person)

FRAME = (400, 800)  # height, width
# left: small; middle: largest; right: medium; far right: a stray tiny box (longer side 30 < 0.4 x 300)
CROWD = np.array([[50, 100, 150, 300, .9], [300, 50, 500, 350, .8], [600, 80, 720, 320, .7],
                  [770, 0, 790, 30, .9]], float)


def test_parse_person_choice_accepts_the_documented_forms():
    assert parse_person_choice("largest") == PersonChoice()
    assert parse_person_choice(" Leftmost ") == PersonChoice("leftmost")
    assert parse_person_choice("rightmost") == PersonChoice("rightmost")
    assert parse_person_choice("index 2") == PersonChoice("index", index=2)
    assert parse_person_choice("point 0.25, 0.5") == PersonChoice("point", point=(0.25, 0.5))
    assert str(parse_person_choice("point 0.25 0.5")) == "point 0.25 0.5"


@pytest.mark.parametrize("text", ["", "biggest", "index", "index -1", "index 1.5", "point 0.5", "point 2 0.5",
                                  "point a b"])
def test_bad_person_choice_names_the_input_and_the_forms(text):
    with pytest.raises(ValueError, match=r"person is .*expected one of: largest \| leftmost \| rightmost"):
        parse_person_choice(text)


def test_choose_person_by_rule():
    assert choose_person(CROWD, PersonChoice(), FRAME) == select_main_person(CROWD) == 1
    assert choose_person(CROWD, PersonChoice("leftmost"), FRAME) == 0
    assert choose_person(CROWD, PersonChoice("rightmost"), FRAME) == 2  # the stray box at 780 is not counted
    assert [choose_person(CROWD, PersonChoice("index", index=i), FRAME) for i in range(4)] == [1, 2, 0, None]
    assert choose_person(CROWD, PersonChoice("point", point=(100 / 800, 200 / 400)), FRAME) == 0  # inside box 0
    assert choose_person(CROWD, PersonChoice("point", point=(520 / 800, 390 / 400)), FRAME) == 1  # nearest centre
    assert choose_person(np.zeros((0, 5)), PersonChoice("leftmost"), FRAME) is None


def walkers(frames=8):
    """Two people walking towards each other; the right one grows past the left one from frame 4."""
    detections = []
    for t in range(frames):
        left = [100 + 20 * t, 100, 200 + 20 * t, 300, .9]
        right = [600 - 20 * t, 150 - 15 * t, 680 - 10 * t, 250 + 15 * t, .8]
        detections.append(np.array([left, right], float))
    return detections


@pytest.mark.parametrize("choice, column", [(PersonChoice(), 0), (PersonChoice("rightmost"), 1),
                                            (PersonChoice("index", index=1), 1),
                                            (PersonChoice("point", point=(0.8, 0.5)), 1)])
def test_tracking_follows_the_chosen_person(choice, column):
    detections = walkers()
    track = track_main_person(detections, person=choice, frame_size=FRAME)
    assert track.found.all()
    assert np.allclose(track.boxes, [d[column, :4] for d in detections])


def test_an_index_choice_waits_for_a_frame_with_that_many_people():
    alone = np.array([[100, 100, 200, 300, .9]])
    detections = [alone, alone, *walkers(3)]
    track = track_main_person(detections, person=PersonChoice("index", index=1), frame_size=FRAME)
    assert track.found.tolist() == [False, False, True, True, True]
    assert np.allclose(track.boxes[2:], [d[1, :4] for d in detections[2:]])


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("person_models")
    return (PersonDetector(export_detector(folder / "det.onnx")),
            WholeBodyPoseModel(export_pose_model(folder / "pose.onnx")))


def two_people_video(frames=3):
    """A big red person on the left, a smaller green one on the right (the fixture detects bright R / G boxes)."""
    video = np.zeros((frames, 128, 256, 3), np.uint8)
    video[:, 10:120, 20:100, 0] = 255
    video[:, 30:110, 170:230, 1] = 255
    return video


def test_extracted_poses_come_from_the_chosen_person(tiny_models):
    detector, pose_model = tiny_models
    video = two_people_video()
    largest = extract_poses(video, detector, pose_model)
    right = extract_poses(video, detector, pose_model, person=PersonChoice("rightmost"))
    clicked = extract_poses(video, detector, pose_model, person=PersonChoice("point", point=(0.78, 0.5)))
    assert np.allclose(largest.boxes, [20, 10, 100, 120])
    assert np.allclose(right.boxes, [170, 30, 230, 110]) and np.array_equal(clicked.boxes, right.boxes)
    assert right.person_found.all()
    # the pose fixture's keypoints sit at fixed places in its input: they move with the box they are read from
    assert right.keypoints[0, :, 0].mean() > 170 > largest.keypoints[0, :, 0].max()
    with pytest.raises(ValueError, match="person 'index 2': no frame of the driving video has that person"):
        extract_poses(video, detector, pose_model, person=PersonChoice("index", index=2))


def test_preprocess_node_follows_the_chosen_person(pack, tmp_path, monkeypatch):
    (tmp_path / "detection").mkdir()
    export_detector(tmp_path / "detection" / "tiny_yolo.onnx")
    export_pose_model(tmp_path / "detection" / "tiny_vitpose.onnx")
    monkeypatch.setenv("WAN_ANIMATE_MODELS_DIR", str(tmp_path))
    pose_models = run_node(pack, "WanAnimatePoseModelLoader", detector="tiny_yolo.onnx",
                           pose_model="tiny_vitpose.onnx")[0]
    video = torch.from_numpy(two_people_video()).float() / 255.0
    settings = {**PREPROCESS, "mode": "replace", "width": 256, "height": 128}
    run = lambda person: run_node(pack, "WanAnimatePreprocess", pose_models=pose_models,  # noqa: E731
                                  character_image=character_image(), driving_video=video, person=person, **settings)
    largest, right = run("largest"), run("rightmost")
    mask_columns = lambda result: torch.nonzero(result[4][0].sum(0)).flatten()  # noqa: E731
    assert mask_columns(largest).min() < 100 < mask_columns(right).min()  # the mask is on the chosen one
    assert "person (rightmost) followed in 3 of 3 frames" in right[6]
    assert not torch.equal(largest[2], right[2])  # face crops of another person
    with pytest.raises(ValueError, match="person is 'tallest'"):
        run("tallest")
