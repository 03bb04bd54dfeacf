"""The shipped workflows: valid graphs of existing nodes, API twins in step, model files declared for download."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = json.loads((ROOT / "tests" / "data" / "comfyui_core_nodes.json").read_text())
UI_FILES = sorted((ROOT / "workflows").glob("*.json"))
API_FILES = sorted((ROOT / "workflows" / "api").glob("*.json"))
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODEL_FOLDERS = {  # loader node -> {widget: ComfyUI model folder}
    "WanAnimateModelLoader": {"model_name": "diffusion_models"},
    "WanAnimateVAELoader": {"vae_name": "vae"},
    "WanAnimateLoraLoader": {"lora_name": "loras"},
    "WanAnimatePoseModelLoader": {"detector": "detection", "pose_model": "detection"},
    "WanAnimateSAM2Loader": {"checkpoint": "sam2"},
    "CLIPLoader": {"clip_name": "text_encoders"},
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "UNETLoader": {"unet_name": "diffusion_models"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "VAELoader": {"vae_name": "vae"},
}


def node_spec(pack, class_type):
    """(ordered [(input name, spec, required)], output types) of a pack or recorded core node."""
    if class_type in pack.NODE_CLASS_MAPPINGS:
        cls = pack.NODE_CLASS_MAPPINGS[class_type]
        declared, outputs = cls.INPUT_TYPES(), list(cls.RETURN_TYPES)
    else:
        assert class_type in CORE["specs"], f"{class_type} is neither ours nor a recorded ComfyUI core node"
        declared, outputs = CORE["specs"][class_type]["input"], CORE["specs"][class_type]["output"]
    inputs = [(name, tuple(spec), group == "required")
              for group in ("required", "optional") for name, spec in declared.get(group, {}).items()]
    return inputs, outputs


def is_file_choice(class_type, name, spec) -> bool:
    """A combo listing files of this installation (models, uploads): its options differ from machine to machine."""
    options = spec[1] if len(spec) > 1 else {}
    return name in MODEL_FOLDERS.get(class_type, {}) or bool(options.get("image_upload") or options.get("video_upload"))


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def test_workflows_are_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "build_workflows.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ui_workflow_has_an_api_twin():
    assert {p.name for p in UI_FILES} == {p.name for p in API_FILES}
    assert {"animate.json", "replace.json", "long_video.json", "low_vram.json", "tpose_retarget.json"} <= \
        {p.name for p in UI_FILES}


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_ui_workflow_graph_is_valid(path, pack):
    workflow = json.loads(path.read_text())
    known = set(CORE["names"]) | set(CORE["frontend_only"]) | set(pack.NODE_CLASS_MAPPINGS)
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for node in nodes.values():
        assert node["type"] in known, f"{path.name}: node type {node['type']} does not exist"
    for link_id, source, slot, target, target_slot, kind in workflow["links"]:
        _, outputs = node_spec(pack, nodes[source]["type"])
        assert outputs[slot] == kind, f"{path.name} link {link_id}: {nodes[source]['type']} output {slot} is " \
                                      f"{outputs[slot]}, the link says {kind}"
        target_input = nodes[target]["inputs"][target_slot]
        assert target_input["link"] == link_id
        specs = {name: spec for name, spec, _ in node_spec(pack, nodes[target]["type"])[0]}
        expected = specs[target_input["name"]][0]
        assert kind in expected.split(",") or (expected == "*"), \
            f"{path.name} link {link_id}: {nodes[target]['type']}.{target_input['name']} takes {expected}, gets {kind}"
    for node in nodes.values():
        if node["type"] in CORE["frontend_only"]:
            continue
        inputs, _ = node_spec(pack, node["type"])
        linked = {i["name"] for i in node["inputs"] if i["link"] is not None}
        widgets = [name for name, spec, _ in inputs if is_widget(spec)]
        for name, spec, required in inputs:
            if required and not is_widget(spec):
                assert name in linked, f"{path.name}: {node['type']}.{name} is required but not connected"
        assert len(node["widgets_values"]) >= len(widgets), f"{path.name}: {node['type']} widget values"


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_is_valid(path, pack):
    workflow = json.loads(path.read_text())
    for node_id, node in workflow.items():
        inputs, _ = node_spec(pack, node["class_type"])
        specs = {name: (spec, required) for name, spec, required in inputs}
        for name, value in node["inputs"].items():
            assert name in specs, f"{path.name} node {node_id}: {node['class_type']} has no input {name}"
            spec, _ = specs[name]
            if isinstance(value, list):
                source = workflow[value[0]]
                _, outputs = node_spec(pack, source["class_type"])
                assert outputs[value[1]] in spec[0].split(",") or is_widget(spec), f"{path.name} node {node_id}.{name}"
            elif isinstance(spec[0], list) and not is_file_choice(node["class_type"], name, spec):
                assert value in spec[0], f"{path.name} node {node_id}.{name}={value!r} not in {spec[0]}"
            elif spec[0] in ("INT", "FLOAT") and len(spec) > 1:
                low, high = spec[1].get("min", float("-inf")), spec[1].get("max", float("inf"))
                assert low <= value <= high, f"{path.name} node {node_id}.{name}={value} outside [{low}, {high}]"
        for name, (spec, required) in specs.items():
            if required:
                assert name in node["inputs"], f"{path.name} node {node_id}: required input {name} missing"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_loaders_declare_their_model_files(path, pack):
    workflow = json.loads(path.read_text())
    for node in workflow["nodes"]:
        folders = MODEL_FOLDERS.get(node["type"])
        if not folders:
            continue
        inputs, _ = node_spec(pack, node["type"])
        widget_names = [name for name, spec, _ in inputs if is_widget(spec)]
        values = dict(zip(widget_names, node["widgets_values"]))
        declared = {m["name"]: m for m in node["properties"].get("models", [])}
        for widget, folder in folders.items():
            name = values[widget]
            assert name in declared, f"{path.name}: {node['type']} uses {name} but does not declare it"
            assert declared[name]["directory"] == folder, f"{path.name}: {name} declared in {declared[name]}"
            assert declared[name]["url"].startswith("https://") and declared[name]["url"].endswith(name)
