"""The tiny test workflows (API format, tests/workflows_test) run end to end through the node classes on CPU."""
import json
from pathlib import Path

import numpy as np
import pytest

from api_runner import CoreStandIns, run_api_workflow
from tiny_models import VIDEO_FPS, VIDEO_FRAMES, write_tiny_models

WORKFLOWS = sorted((Path(__file__).parent / "workflows_test").glob("*_tiny.json"))


@pytest.fixture(scope="module")
def model_root(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("comfy_root")
    write_tiny_models(root)
    monkeypatch_module.setenv("WAN_ANIMATE_MODELS_DIR", str(root / "models"))
    monkeypatch_module.setenv("WAN_ANIMATE_INPUT_DIR", str(root / "input"))
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize("workflow_path", WORKFLOWS, ids=lambda p: p.stem)
def test_tiny_workflow_runs_through_nodes(workflow_path, model_root, pack, tmp_path):
    workflow = json.loads(workflow_path.read_text())
    core = CoreStandIns(model_root / "input", tmp_path)
    results = run_api_workflow(workflow, pack.NODE_CLASS_MAPPINGS, core)

    sampler = next(k for k, n in workflow.items() if n["class_type"] == "WanAnimateSampler")
    preprocess = next(k for k, n in workflow.items() if n["class_type"] == "WanAnimatePreprocess")
    reference, pose, face, background, mask = results[preprocess][:5]
    frames = results[sampler][0]
    fps = workflow[preprocess]["inputs"]["fps"]
    expected = VIDEO_FRAMES if fps == -1 else int(VIDEO_FRAMES / VIDEO_FPS * fps)  # resampled by timestamp
    assert frames.shape == (expected, *reference.shape[1:3], 3)
    assert pose.shape[0] == face.shape[0] == expected and face.shape[1:3] == (512, 512)
    assert float(core.saved_videos[0]["fps"]) == (VIDEO_FPS if fps == -1 else fps)
    assert float(frames.min()) >= 0.0 and float(frames.max()) <= 1.0 and float(frames.std()) > 0
    if workflow[preprocess]["inputs"]["mode"] == "replace":
        assert 0.0 < float(mask.mean()) < 1.0
        assert float(background[mask > 0.5].abs().max()) == 0.0
    saved = np.load(core.saved[0])
    assert saved.shape == tuple(frames.shape)
