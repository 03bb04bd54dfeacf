"""Preprocess resamples the driving video to the generation's frame rate and cuts its sound to match."""
from __future__ import annotations

import pytest
import torch
from onnx_fixtures import export_detector, export_pose_model
from test_nodes_errors import PREPROCESS, character_image, driving_video, run_node

SAMPLE_RATE = 8000


@pytest.fixture(scope="module")
def pose_models(pack, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    (models / "detection").mkdir()
    export_detector(models / "detection" / "tiny_yolo.onnx")
    export_pose_model(models / "detection" / "tiny_vitpose.onnx")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WAN_ANIMATE_MODELS_DIR", str(models))
        yield run_node(pack, "WanAnimatePoseModelLoader", detector="tiny_yolo.onnx", pose_model="tiny_vitpose.onnx")[0]


def preprocess(pack, pose_models, video, **rates):
    return run_node(pack, "WanAnimatePreprocess", pose_models=pose_models, character_image=character_image(),
                    driving_video=video, **PREPROCESS, **rates)


def test_60_fps_video_is_generated_from_every_other_frame_at_30_fps(pack, pose_models):
    video = driving_video(12)
    sound = {"waveform": torch.randn(1, 2, SAMPLE_RATE), "sample_rate": SAMPLE_RATE}  # 1 s; 12 frames = 0.2 s
    resampled = preprocess(pack, pose_models, video, video_fps=60.0, audio=sound)  # fps: default 30
    as_given = preprocess(pack, pose_models, video[::2].clone(), video_fps=0.0, fps=30.0)
    assert resampled[1].shape[0] == 6
    for slot in (1, 2):  # pose and face frames: those of frames 0, 2, 4, ...
        assert torch.equal(resampled[slot], as_given[slot])
    fps, audio = resampled[7], resampled[8]
    assert fps == 30.0
    assert audio["sample_rate"] == SAMPLE_RATE
    assert torch.equal(audio["waveform"], sound["waveform"][..., :SAMPLE_RATE // 5])  # 6 frames at 30 fps
    assert "12 frames at 60 fps -> 6 frames at 30 fps" in resampled[6]


def test_minus_one_keeps_the_video_rate_and_no_sound_stays_none(pack, pose_models):
    result = preprocess(pack, pose_models, driving_video(5), video_fps=24.0, fps=-1.0)
    assert result[1].shape[0] == 5 and result[7] == 24.0 and result[8] is None


def test_minus_one_without_the_video_rate_is_an_error(pack, pose_models):
    with pytest.raises(ValueError, match="video_fps"):
        preprocess(pack, pose_models, driving_video(5), fps=-1.0)
