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
        order = {}
    else:  # recorded with sorted keys: the frontend orders inputs (and widget values) by `input_order`
        assert class_type in CORE["specs"], f"{class_type} is neither ours nor a recorded ComfyUI core node"
        declared, outputs = CORE["specs"][class_type]["input"], CORE["specs"][class_type]["output"]
        order = CORE["specs"][class_type]["input_order"]
    inputs = [(name, tuple(declared[group][name]), group == "required")
              for group in ("required", "optional") for name in order.get(group, declared.get(group, {}))]
    return inputs, outputs


def is_file_choice(class_type, name, spec) -> bool:
    """A combo listing files of this installation (models, uploads): its options differ from machine to machine."""
    options = spec[1] if len(spec) > 1 else {}
    return name in MODEL_FOLDERS.get(class_type, {}) or bool(options.get("image_upload") or options.get("video_upload"))


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def combo_options(spec) -> list | None:
    """The choices of a combo input (legacy list form or v3 "COMBO" with options), else None."""
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return spec[1]["options"]
    return None


def ui_widget_values(node, inputs) -> dict:
    """{widget name: value} of a UI-format node, skipping the frontend's extra entries (seed control, upload)."""
    values, position = {}, 0
    for name, spec, _ in inputs:
        if not is_widget(spec):
            continue
        values[name] = node["widgets_values"][position]
        options = spec[1] if len(spec) > 1 else {}
        position += 1 + bool(options.get("control_after_generate")) + \
            bool(options.get("image_upload") or options.get("video_upload"))
    return values


def check_value(where: str, class_type: str, name: str, spec, value) -> None:
    """A widget's value fits its input: a listed choice of a combo (except installation-dependent file lists), a
    number within the declared range."""
    options = combo_options(spec)
    if options is not None and not is_file_choice(class_type, name, spec):
        assert value in options, f"{where}: {class_type}.{name}={value!r} not in {options}"
    elif spec[0] in ("INT", "FLOAT") and len(spec) > 1:
        low, high = spec[1].get("min", float("-inf")), spec[1].get("max", float("inf"))
        assert isinstance(value, (int, float)) and low <= value <= high, \
            f"{where}: {class_type}.{name}={value!r} outside [{low}, {high}]"


def test_workflows_are_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "build_workflows.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ui_workflow_has_an_api_twin():
    assert {p.name for p in UI_FILES} == {p.name for p in API_FILES}
    assert {"animate.json", "replace.json", "long_video.json", "low_vram.json", "tpose_kontext.json"} <= \
        {p.name for p in UI_FILES}


def test_tpose_kontext_feeds_kontext_edits_to_retargeting():
    """The official use_flux path with core nodes: each T-pose input of Preprocess is a FLUX.1 Kontext edit (28
    steps, guidance 2.5, the image as reference latent) of the character image / the driving video's first frame,
    prompted with an official edit prompt."""
    api = json.loads((ROOT / "workflows" / "api" / "tpose_kontext.json").read_text())
    sys.path.insert(0, str(ROOT / "tools"))
    from workflow_specs import TPOSE_PROMPTS

    preprocess = next(node for node in api.values() if node["class_type"] == "WanAnimatePreprocess")
    assert preprocess["inputs"]["retarget"] is True and preprocess["inputs"]["mode"] == "animate"
    sources = {}
    for name in ("tpose_character", "tpose_driving"):
        decode = api[preprocess["inputs"][name][0]]
        assert decode["class_type"] == "VAEDecode"
        sampler = api[decode["inputs"]["samples"][0]]
        assert sampler["class_type"] == "KSampler"
        assert (sampler["inputs"]["steps"], sampler["inputs"]["cfg"], sampler["inputs"]["denoise"]) == (28, 1.0, 1.0)
        guidance = api[sampler["inputs"]["positive"][0]]
        assert guidance["class_type"] == "FluxGuidance" and guidance["inputs"]["guidance"] == 2.5
        reference = api[guidance["inputs"]["conditioning"][0]]
        assert reference["class_type"] == "ReferenceLatent"
        assert reference["inputs"]["latent"] == sampler["inputs"]["latent_image"]
        assert api[reference["inputs"]["conditioning"][0]]["inputs"]["text"] in TPOSE_PROMPTS.values()
        assert api[sampler["inputs"]["model"][0]]["inputs"]["unet_name"] == "flux1-dev-kontext_fp8_scaled.safetensors"
        scale = api[api[reference["inputs"]["latent"][0]]["inputs"]["pixels"][0]]
        assert scale["class_type"] == "FluxKontextImageScale"
        sources[name] = scale["inputs"]["image"][0]
    assert api[sources["tpose_character"]]["class_type"] == "LoadImage"
    first_frame = api[sources["tpose_driving"]]
    assert first_frame["class_type"] == "ImageFromBatch" and first_frame["inputs"]["batch_index"] == 0
    assert api[first_frame["inputs"]["image"][0]]["class_type"] == "GetVideoComponents"


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
        values = ui_widget_values(node, inputs)
        for name, spec, _ in inputs:
            if name in values:
                check_value(path.name, node["type"], name, spec, values[name])


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
            else:
                check_value(f"{path.name} node {node_id}", node["class_type"], name, spec, value)
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
