"""The real-ComfyUI harness offline: the API-workflow validator, sub-graph extraction, pack linking and the
extra-paths file. Runs without ComfyUI."""
from __future__ import annotations

import pytest

import comfyui_server as harness
import comfyui_workflows as workflows
from wan_animate.comfyui_process import PACK_LINK_NAME, ComfyUIStartError, link_pack

OBJECT_INFO = {
    "LoadImage": {"input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}},
                  "output": ["IMAGE", "MASK"]},
    "Scale": {"input": {"required": {"image": ["IMAGE"], "width": ["INT", {"min": 16, "max": 4096}],
                                     "factor": ["FLOAT", {"min": 0.0}], "method": ["COMBO", {"options": ["a"]}]},
                        "optional": {"mask": ["MASK,IMAGE"], "note": ["STRING", {}]},
                        "hidden": {"unique_id": "UNIQUE_ID"}},
              "output": ["IMAGE"]},
    "Anything": {"input": {"required": {"value": ["*"]}}, "output": ["*"]},
}


def _scale(**inputs):
    base = {"image": ["1", 0], "width": 64, "factor": 1.5, "method": "a"}
    return {"class_type": "Scale", "inputs": {**base, **inputs}}


def test_types_compatible_follows_comfyui_rules():
    assert workflows.types_compatible("IMAGE", "IMAGE")
    assert workflows.types_compatible("MASK", "MASK,IMAGE")
    assert workflows.types_compatible("IMAGE", "*") and workflows.types_compatible("*", "LATENT")
    assert not workflows.types_compatible("MASK", "IMAGE")
    assert workflows.types_compatible(["a", "b"], ["a"]) and workflows.types_compatible(["a"], "COMBO")
    assert not workflows.types_compatible("STRING", ["a"])


def test_sound_workflow_has_no_problems():
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": "missing-on-this-install.png"}},
                "2": _scale(mask=["1", 1], note="x", unique_id="2"),
                "3": {"class_type": "Anything", "inputs": {"value": ["2", 0]}}}
    assert workflows.api_workflow_problems(workflow, OBJECT_INFO) == []


def test_every_kind_of_problem_is_named():
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": _scale(image=["1", 1], width=8, factor="big", colour=3),
        "3": {"class_type": "Scale", "inputs": {"image": ["9", 0], "width": 5000.5, "factor": -1.0, "method": "a"}},
        "4": {"class_type": "Nope", "inputs": {}},
        "5": _scale(image=["1", 7], width=True),
        "6": {"class_type": "Scale", "inputs": {"image": ["1"], "factor": 1.0, "method": "a"}},
    }
    assert workflows.api_workflow_problems(workflow, OBJECT_INFO) == [
        "node 2 [Scale].image: expects 'IMAGE' but node 1 output 1 gives 'MASK'",
        "node 2 [Scale].width: 8 is below the minimum 16",
        "node 2 [Scale].factor: expects FLOAT, found 'big'",
        "node 2 [Scale]: no input named 'colour'",
        "node 3 [Scale].image: links to node 9, which is not in the workflow",
        "node 3 [Scale].width: expects INT, found 5000.5",
        "node 3 [Scale].factor: -1.0 is below the minimum 0.0",
        "node 4: unknown class_type 'Nope'",
        "node 5 [Scale].image: links to output 7 of node 1, which has 2 outputs",
        "node 5 [Scale].width: expects INT, found True",
        "node 6 [Scale]: required input 'width' is missing",
        "node 6 [Scale].image: a link must be [source_node_id, output_index], found ['1']",
    ]


def test_upstream_subgraph_keeps_only_dependencies():
    workflow = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
                "2": _scale(), "3": _scale(image=["2", 0]), "4": _scale()}
    part = workflows.upstream_subgraph(workflow, "3")
    assert part == {k: workflow[k] for k in ("1", "2", "3")}
    part["1"]["inputs"]["image"] = "changed.png"
    assert workflow["1"]["inputs"]["image"] == "a.png"


def test_link_pack_creates_reuses_and_refuses(tmp_path):
    pack = tmp_path / "pack"
    pack.mkdir()
    comfy = tmp_path / "comfy"
    comfy.mkdir()
    link = link_pack(comfy, pack)
    assert link == comfy / "custom_nodes" / PACK_LINK_NAME and link.resolve() == pack
    (comfy / "custom_nodes" / "aaa_other_name").symlink_to(pack)
    assert link_pack(comfy, pack) == comfy / "custom_nodes" / "aaa_other_name"

    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ComfyUIStartError, match="is not this checkout"):
        link_pack(comfy, other)


def test_extra_paths_yaml_lists_probe_nodes_and_asset_folders(tmp_path):
    for folder in ("vae", "diffusion_models"):
        (tmp_path / "models" / folder).mkdir(parents=True)
    text = harness._extra_paths_yaml(tmp_path)
    assert text.splitlines() == [
        "wan_animate_tests:",
        f'  custom_nodes: "{harness.PROBE_NODES_DIR}"',
        f'  diffusion_models: "{tmp_path / "models" / "diffusion_models"}"',
        f'  vae: "{tmp_path / "models" / "vae"}"',
    ]
    assert harness._extra_paths_yaml(None).splitlines()[1:] == [f'  custom_nodes: "{harness.PROBE_NODES_DIR}"']


def test_comfyui_path_is_optional_and_checked(monkeypatch, tmp_path):
    monkeypatch.delenv(harness.COMFYUI_PATH_ENV, raising=False)
    assert harness.comfyui_path() is None
    monkeypatch.setenv(harness.COMFYUI_PATH_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="has no main.py"):
        harness.comfyui_path()
