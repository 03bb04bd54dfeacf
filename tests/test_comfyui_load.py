"""Real-ComfyUI layer: the pack loads in ComfyUI, its nodes are listed, shipped API workflows validate and test
workflows run. Skipped unless COMFYUI_PATH names a ComfyUI checkout (docs/COMFYUI_TESTING.md)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from comfyui_server import REPO_ROOT
from comfyui_workflows import api_workflow_problems, queue_and_wait
from conftest import load_pack

API_WORKFLOWS = sorted((REPO_ROOT / "workflows" / "api").glob("*.json"))
TEST_WORKFLOWS_DIR = REPO_ROOT / "tests" / "workflows_test"
TEST_WORKFLOWS = sorted(TEST_WORKFLOWS_DIR.glob("*.json"))

pytestmark = pytest.mark.comfyui


def test_pack_imports_without_error(comfyui):
    assert comfyui.pack_import_errors() == []
    log = comfyui.log_text()
    assert str(comfyui.pack_dir) in log, "ComfyUI's 'Import times for custom nodes' does not list the pack"


def test_object_info_lists_every_pack_node(comfyui):
    expected = set(load_pack().NODE_CLASS_MAPPINGS)
    info = comfyui.object_info()
    missing = sorted(expected - set(info))
    assert not missing, f"/object_info lacks {missing}"
    for name in expected:
        assert info[name]["python_module"].startswith("custom_nodes."), (name, info[name]["python_module"])
    print(f"/object_info: {len(info)} node types, {len(expected)} from this pack: {sorted(expected)}")


def test_object_info_matches_pack_display_names(comfyui):
    display = load_pack().NODE_DISPLAY_NAME_MAPPINGS
    info = comfyui.object_info()
    assert {name: info[name]["display_name"] for name in display} == display


@pytest.mark.parametrize("path", API_WORKFLOWS + TEST_WORKFLOWS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_api_workflow_validates_against_object_info(comfyui, path: Path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    assert api_workflow_problems(workflow, comfyui.object_info()) == []


@pytest.mark.parametrize("path", TEST_WORKFLOWS, ids=lambda p: p.name)
def test_test_workflow_runs(comfyui, path: Path):
    """Queue every tests/workflows_test/*.json over HTTP; files under workflows_test/inputs/ are its inputs."""
    inputs = TEST_WORKFLOWS_DIR / "inputs"
    if inputs.is_dir():
        shutil.copytree(inputs, comfyui.input_dir, dirs_exist_ok=True)
    entry = queue_and_wait(comfyui, json.loads(path.read_text(encoding="utf-8")), timeout=600.0)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"], f"{path.name} ran but no node produced an output"


def test_json_nan_in_a_float_input_fails_naming_the_input(comfyui):
    """/prompt accepts JSON NaN and its min / max validation lets it through: the node's own check names it."""
    from wan_animate.client import ExecutionFailed

    inputs = TEST_WORKFLOWS_DIR / "inputs"
    if inputs.is_dir():
        shutil.copytree(inputs, comfyui.input_dir, dirs_exist_ok=True)
    workflow = json.loads((TEST_WORKFLOWS_DIR / "animate_tiny.json").read_text(encoding="utf-8"))
    preprocess = next(node for node in workflow.values() if node["class_type"] == "WanAnimatePreprocess")
    preprocess["inputs"]["mask_blur"] = float("nan")  # sent as JSON NaN
    with pytest.raises(ExecutionFailed) as error:
        queue_and_wait(comfyui, workflow, timeout=300.0)
    assert "mask_blur is nan; expected a finite number" in str(error.value)
