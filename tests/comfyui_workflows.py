"""API-format workflows against a real ComfyUI: check them against /object_info, cut out sub-graphs, queue them."""
from __future__ import annotations

import json

from comfyui_server import ComfyUIServer

ANY_TYPES = {"*", "COMFY_MATCHTYPE_V3", "COMFY_AUTOGROW_V3"}


def types_compatible(received: str | list, expected: str | list) -> bool:
    """ComfyUI's link rule: equal, '*' on either side, or an overlap of comma-separated unions; combos take lists."""
    if isinstance(expected, list) or expected == "COMBO":
        return isinstance(received, list) or received in ("COMBO", "*")
    if isinstance(received, list):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return bool(got & ANY_TYPES or want & ANY_TYPES or got & want)


def _input_specs(node_info: dict) -> tuple[dict, dict]:
    inputs = node_info.get("input", {})
    required = dict(inputs.get("required", {}))
    optional = {**inputs.get("optional", {}), **inputs.get("hidden", {})}
    return required, optional


def api_workflow_problems(workflow: dict, object_info: dict) -> list[str]:
    """What ComfyUI would reject in an API-format workflow, checked against /object_info; [] when it is sound.

    Checks: every class_type is known, every input name exists, every required input is given, every link points at
    an existing node and output slot whose type the input accepts, plain values of INT/FLOAT/BOOLEAN/STRING inputs
    have that type, and numbers lie within the declared min/max. Combo values are not checked (model files differ
    between installs).
    """
    problems = []
    for node_id, node in workflow.items():
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if class_type not in object_info:
            problems.append(f"node {node_id}: unknown class_type {class_type!r}")
            continue
        required, optional = _input_specs(object_info[class_type])
        given = node.get("inputs", {})
        for name in required:
            if name not in given:
                problems.append(f"node {node_id} [{class_type}]: required input {name!r} is missing")
        for name, value in given.items():
            spec = required.get(name, optional.get(name))
            if spec is None:
                problems.append(f"node {node_id} [{class_type}]: no input named {name!r}")
                continue
            expected = spec[0]
            if isinstance(value, list):
                problems += _link_problems(workflow, object_info, node_id, class_type, name, value, expected)
            else:
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                problems += _value_problems(node_id, class_type, name, value, expected, options)
    return problems


def _link_problems(workflow, object_info, node_id, class_type, name, link, expected) -> list[str]:
    where = f"node {node_id} [{class_type}].{name}"
    if len(link) != 2 or not isinstance(link[1], int):
        return [f"{where}: a link must be [source_node_id, output_index], found {link!r}"]
    source_id, slot = str(link[0]), link[1]
    source = workflow.get(source_id)
    if source is None:
        return [f"{where}: links to node {source_id}, which is not in the workflow"]
    outputs = object_info.get(source.get("class_type"), {}).get("output")
    if outputs is None:
        return []  # the unknown source class is reported on its own node
    if not 0 <= slot < len(outputs):
        return [f"{where}: links to output {slot} of node {source_id}, which has {len(outputs)} outputs"]
    if not types_compatible(outputs[slot], expected):
        return [f"{where}: expects {expected!r} but node {source_id} output {slot} gives {outputs[slot]!r}"]
    return []


def _value_problems(node_id, class_type, name, value, expected, options: dict) -> list[str]:
    where = f"node {node_id} [{class_type}].{name}"
    checks = {"INT": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "FLOAT": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "BOOLEAN": lambda v: isinstance(v, bool), "STRING": lambda v: isinstance(v, str)}
    check = checks.get(expected) if isinstance(expected, str) else None
    if check is not None and not check(value):
        return [f"{where}: expects {expected}, found {value!r}"]
    if expected in ("INT", "FLOAT"):
        if "min" in options and value < options["min"]:
            return [f"{where}: {value} is below the minimum {options['min']}"]
        if "max" in options and value > options["max"]:
            return [f"{where}: {value} is above the maximum {options['max']}"]
    return []


def upstream_subgraph(workflow: dict, node_id: str) -> dict:
    """The part of an API-format workflow that `node_id` depends on (itself included), node ids kept."""
    keep, pending = {}, [str(node_id)]
    while pending:
        current = pending.pop()
        if current in keep:
            continue
        keep[current] = json.loads(json.dumps(workflow[current]))
        pending += [str(v[0]) for v in keep[current].get("inputs", {}).values() if isinstance(v, list) and len(v) == 2]
    return keep


def queue_and_wait(server: ComfyUIServer, workflow: dict, timeout: float = 300.0) -> dict:
    """Queue an API-format workflow over HTTP and wait for it through /history; returns the history entry.

    Raises the client's PromptRejected / ExecutionFailed with ComfyUI's own messages.
    """
    from wan_animate.client import ComfyClient

    return ComfyClient(server.url).run_prompt(workflow, timeout=timeout)[1]
