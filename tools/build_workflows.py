"""Write the example workflows: UI format (workflows/*.json) and their API-format twins (workflows/api/*.json).

Both come from the graphs described in `workflow_specs.py`, the pack's own INPUT_TYPES and the core node definitions
recorded from ComfyUI 0.8.0 (tests/data/comfyui_core_nodes.json), so the two formats can never disagree.
`python tools/build_workflows.py` rewrites them; `--check` exits 1 when a committed file differs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_specs import WORKFLOWS, Node  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORE_NODES = ROOT / "tests" / "data" / "comfyui_core_nodes.json"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NODE_WIDTH = 320


def load_pack_nodes() -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import load_pack

    return load_pack().NODE_CLASS_MAPPINGS


def input_specs(class_type: str, pack_nodes: dict, core: dict) -> tuple[list[tuple[str, tuple]], list[str]]:
    """[(input name, spec)] in ComfyUI's order, and the output types, for a pack or core node."""
    if class_type in pack_nodes:
        cls = pack_nodes[class_type]
        declared = cls.INPUT_TYPES()
        outputs = list(cls.RETURN_TYPES)
        order = {}
    else:  # recorded with sorted keys: the frontend's order is `input_order`
        declared = core["specs"][class_type]["input"]
        outputs = core["specs"][class_type]["output"]
        order = core["specs"][class_type]["input_order"]
    specs = [(name, tuple(declared[group][name])) for group in ("required", "optional")
             for name in order.get(group, declared.get(group, {}))]
    return specs, outputs


def is_widget(spec: tuple) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def widget_values(node: Node, specs: list[tuple[str, tuple]]) -> list:
    """widgets_values as the frontend stores them, with its extra entries (seed control, upload button)."""
    values = []
    for name, spec in specs:
        if not is_widget(spec):
            continue
        options = spec[1] if len(spec) > 1 else {}
        if name not in node.widgets:
            if name in node.links:
                values.append(options.get("default"))
                continue
            if "default" not in options:
                raise ValueError(f"{node.type}.{name} needs a value in the workflow spec")
        values.append(node.widgets.get(name, options.get("default")))
        if options.get("control_after_generate"):
            values.append("fixed")
        if options.get("image_upload") or options.get("video_upload"):
            values.append("image")
    return values


def ui_workflow(nodes: list[Node], pack_nodes: dict, core: dict) -> dict:
    by_id = {n.id: n for n in nodes}
    links, ui_nodes = [], []
    outputs_of: dict[int, list[dict]] = {}
    for node in nodes:
        if node.type in core["frontend_only"]:
            continue
        _, output_types = input_specs(node.type, pack_nodes, core)
        names = getattr(pack_nodes.get(node.type), "RETURN_NAMES", None) or \
            core["specs"].get(node.type, {}).get("output_name", output_types)
        outputs_of[node.id] = [{"name": n, "type": t, "links": []} for n, t in zip(names, output_types)]
    for order, node in enumerate(nodes):
        properties = {"Node name for S&R": node.type}
        if node.type in core["frontend_only"]:
            ui_nodes.append({"id": node.id, "type": node.type, "pos": list(node.pos), "size": [420, 300],
                             "flags": {}, "order": order, "mode": 0, "inputs": [], "outputs": [],
                             "title": node.title, "properties": properties,
                             "widgets_values": [node.widgets["text"]], "color": "#432", "bgcolor": "#653"})
            continue
        specs, _ = input_specs(node.type, pack_nodes, core)
        inputs = []
        for name, spec in specs:
            linked = name in node.links
            if not linked and is_widget(spec):
                continue
            entry = {"name": name, "type": spec[0] if isinstance(spec[0], str) else "COMBO", "link": None}
            if is_widget(spec):
                entry["widget"] = {"name": name}
            if linked:
                source, slot = node.links[name]
                link_id = len(links) + 1
                kind = outputs_of[source][slot]["type"]
                entry["link"] = link_id
                links.append([link_id, source, slot, node.id, len(inputs), kind])
                outputs_of[source][slot]["links"].append(link_id)
            inputs.append(entry)
        if node.models:
            properties["models"] = [dict(m) for m in node.models]
        ui_node = {"id": node.id, "type": node.type, "pos": list(node.pos), "size": [NODE_WIDTH, 0], "flags": {},
                   "order": order, "mode": 0, "inputs": inputs, "outputs": outputs_of[node.id],
                   "properties": properties, "widgets_values": widget_values(node, specs)}
        if node.title:
            ui_node["title"] = node.title
        ui_nodes.append(ui_node)
    for ui_node in ui_nodes:
        for slot, output in enumerate(ui_node["outputs"]):
            output["slot_index"] = slot
    return {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.6, "offset": [40, 40]}}, "version": 0.4}


def api_workflow(nodes: list[Node], pack_nodes: dict, core: dict) -> dict:
    api = {}
    for node in nodes:
        if node.type in core["frontend_only"]:
            continue
        specs, _ = input_specs(node.type, pack_nodes, core)
        inputs = {}
        for name, spec in specs:
            if name in node.links:
                source, slot = node.links[name]
                inputs[name] = [str(source), slot]
            elif is_widget(spec):
                options = spec[1] if len(spec) > 1 else {}
                inputs[name] = node.widgets.get(name, options.get("default"))
        api[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": node.title or node.type}}
    return api


def build() -> dict[Path, str]:
    pack_nodes = load_pack_nodes()
    core = json.loads(CORE_NODES.read_text())
    files = {}
    for name, nodes in WORKFLOWS.items():
        files[ROOT / "workflows" / f"{name}.json"] = json.dumps(ui_workflow(nodes, pack_nodes, core), indent=1,
                                                                ensure_ascii=False) + "\n"
        files[ROOT / "workflows" / "api" / f"{name}.json"] = json.dumps(api_workflow(nodes, pack_nodes, core),
                                                                        indent=1, ensure_ascii=False) + "\n"
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a committed workflow is out of date")
    args = parser.parse_args()
    stale = []
    for path, text in build().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"out of date: {path.relative_to(ROOT)} (run python tools/build_workflows.py)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
