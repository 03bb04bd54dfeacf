"""Points clicked on the first frame (the web extension's points editor) join SAM2's pose prompts of frame 0."""
import sys
import types

import numpy as np
import pytest
import torch

from test_nodes_errors import PREPROCESS, character_image, run_node
from test_preprocess_masks import FakePredictor, body_keypoints
from wan_animate.preprocess import masks as M
from wan_animate.preprocess.masks import UserPoints, parse_user_points, with_user_points


def test_editor_json_is_read_as_fractions():
    text = '{"positive": [[0.25, 0.5], [1, 0]], "negative": [[0.75, 0.125]]}'
    assert parse_user_points(text) == UserPoints(positive=((0.25, 0.5), (1.0, 0.0)), negative=((0.75, 0.125),))
    assert parse_user_points("") == UserPoints() and not parse_user_points("  ")
    assert parse_user_points('{"negative": []}') == UserPoints()


@pytest.mark.parametrize("text, message", [
    ("[0.5, 0.5]", "an object with the lists"),
    ('{"positive": [[0.5]]}', '"positive" must be a list of \\[x, y\\] pairs'),
    ('{"negative": [[0.5, 1.5]]}', '"negative" must be a list of \\[x, y\\] pairs'),
    ('{"positive": [[0.5, 0.5]], "boxes": []}', "an object with the lists"),
    ("{positive: 1}", "expected JSON like"),
])
def test_bad_points_name_the_input(text, message):
    with pytest.raises(ValueError, match=f"points: .*{message}"):
        parse_user_points(text)


def test_user_points_follow_the_pose_points_with_their_labels():
    pose = np.array([[10, 20], [30, 40]], np.int32)
    user = UserPoints(positive=((0.5, 0.25),), negative=((0.1, 0.9), (1.0, 1.0)))
    points, labels = with_user_points(pose, user, (200, 100))  # height 200, width 100
    assert points.dtype == np.int32 and labels.dtype == np.int32
    assert points.tolist() == [[10, 20], [30, 40], [50, 50], [10, 180], [99, 199]]  # the far edge stays inside
    assert labels.tolist() == [1, 1, 1, 0, 0]


@pytest.fixture
def fake_sam2(monkeypatch):
    module = types.ModuleType("sam2.sam2_video_predictor")
    module.load_video_frames = lambda *a, **k: pytest.fail("the in-memory loader must be used")
    build = types.ModuleType("sam2.build_sam")
    build.built = []
    build.build_sam2_video_predictor = lambda config, checkpoint, device: build.built.append(
        FakePredictor(module)) or build.built[-1]
    monkeypatch.setitem(sys.modules, "sam2", types.ModuleType("sam2"))
    monkeypatch.setitem(sys.modules, "sam2.sam2_video_predictor", module)
    monkeypatch.setitem(sys.modules, "sam2.build_sam", build)
    return module, build


def test_clicked_points_join_the_prompts_of_the_first_key_frame_only(fake_sam2):
    module, _ = fake_sam2
    frames = np.zeros((7, 12, 10, 3), np.uint8)
    predictor = FakePredictor(module)
    user = UserPoints(positive=((0.5, 0.5),), negative=((0.0, 1.0),))
    M.sam2_person_masks(frames, body_keypoints(7) / 20, "unused.pt", chunk_frames=5, predictor=predictor,
                        user_points=user)
    prompts = [call for call in predictor.calls if call[0] == "points"]
    pose_only = FakePredictor(module)
    M.sam2_person_masks(frames, body_keypoints(7) / 20, "unused.pt", chunk_frames=5, predictor=pose_only)
    expected = [call for call in pose_only.calls if call[0] == "points"]
    # chunk 1 has key frames 0..4 (5 frames, step 1), chunk 2 frames 0, 1 (2 frames): only the video's frame 0 changes
    assert [c[1] for c in prompts] == [c[1] for c in expected] == [0, 1, 2, 3, 4, 0]
    first, first_pose = prompts[0], expected[0]
    assert first[3] == first_pose[3] + [[5, 6], [0, 11]]  # 10 x 12 frame: (0.5, 0.5) -> (5, 6); (0, 1) -> (0, 11)
    assert first[4] == [1] * 8 + [1, 0]
    assert prompts[1:] == expected[1:]


def test_preprocess_node_sends_the_editor_points_to_sam2(pack, fake_sam2, tmp_path, monkeypatch):
    from onnx_fixtures import export_detector, export_pose_model
    from test_preprocess_person import two_people_video

    _, build = fake_sam2
    (tmp_path / "detection").mkdir()
    export_detector(tmp_path / "detection" / "tiny_yolo.onnx")
    export_pose_model(tmp_path / "detection" / "tiny_vitpose.onnx")
    monkeypatch.setenv("WAN_ANIMATE_MODELS_DIR", str(tmp_path))
    pose_models = run_node(pack, "WanAnimatePoseModelLoader", detector="tiny_yolo.onnx",
                           pose_model="tiny_vitpose.onnx")[0]
    sam2 = types.SimpleNamespace(path="sam2_hiera_large.pt", device="cpu")
    video = torch.from_numpy(two_people_video(2)).float() / 255.0
    settings = {**PREPROCESS, "mode": "replace", "width": 256, "height": 128, "mask_method": "sam2"}
    run_node(pack, "WanAnimatePreprocess", pose_models=pose_models, character_image=character_image(),
             driving_video=video, sam2=sam2, points='{"positive": [[0.5, 0.5]], "negative": [[0.25, 0.75]]}',
             **settings)
    first = next(call for call in build.built[-1].calls if call[0] == "points")
    assert first[3][-2:] == [[128, 64], [64, 96]] and first[4][-3:] == [1, 1, 0]
    with pytest.raises(ValueError, match="points: expected JSON"):
        run_node(pack, "WanAnimatePreprocess", pose_models=pose_models, character_image=character_image(),
                 driving_video=video, sam2=sam2, points="[[0.5", **settings)
