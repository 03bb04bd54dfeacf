"""The example workflows as files: which API-format graph to queue, and which model files it declares.

The UI-format workflows (workflows/NAME.json) declare every model file on its loader node, as ComfyUI's
missing-models dialog reads it: `properties.models = [{name, url, directory[, sha256]}]`. Their API-format twins
(workflows/api/NAME.json) are what a script queues.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = REPO_ROOT / "workflows"


@dataclass(frozen=True)
class ModelFile:
    """One model file a workflow needs: its file name, the models/ subfolder, where to get it."""

    name: str
    directory: str
    url: str | None = None
    sha256: str | None = None


@dataclass
class WorkflowChoice:
    """An API-format graph to queue and the models its UI twin declares (empty when it has no twin)."""

    api_path: Path
    api: dict
    models: list[ModelFile]
    ui_path: Path | None = None


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the workflow {path}: {error}") from error


def is_ui_format(data: object) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def declared_models(ui_workflow: dict) -> list[ModelFile]:
    """Every model file the UI workflow's nodes declare, once each, in node order."""
    found: dict[tuple[str, str], ModelFile] = {}
    for node in ui_workflow.get("nodes", []):
        properties = node.get("properties") if isinstance(node, dict) else None
        for entry in (properties or {}).get("models", []) or []:
            if not isinstance(entry, dict) or not entry.get("name") or not entry.get("directory"):
                continue
            key = (entry["directory"], entry["name"])
            found.setdefault(key, ModelFile(entry["name"], entry["directory"], entry.get("url"),
                                            entry.get("sha256") or entry.get("hash")))
    return list(found.values())


def shipped_workflow_names() -> list[str]:
    return sorted(path.stem for path in (WORKFLOWS_DIR / "api").glob("*.json"))


def choose_workflow(name_or_path: str) -> WorkflowChoice:
    """`animate` (a shipped workflow's name) or a path: an API-format file (its UI twin, if any, declares the models:
    DIR/api/NAME.json <-> DIR/NAME.json) or a UI-format file with its API twin at DIR/api/NAME.json."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        if name_or_path not in shipped_workflow_names():
            raise ValueError(f"--workflow {name_or_path}: no such workflow; choose one of "
                             f"{', '.join(shipped_workflow_names())} or give a path to a .json file")
        path = WORKFLOWS_DIR / "api" / f"{name_or_path}.json"
    if not path.is_file():
        raise FileNotFoundError(f"workflow file {path} does not exist")
    data = _read_json(path)
    if is_ui_format(data):
        ui_path, api_path = path, path.parent / "api" / path.name
        if not api_path.is_file():
            raise ValueError(f"{path} is a UI-format workflow; queueing needs its API-format twin {api_path} "
                             f"(in ComfyUI: Workflow > Export (API))")
        api = _read_json(api_path)
        ui = data
    else:
        api_path, api = path, data
        ui_path = path.parent.parent / path.name if path.parent.name == "api" else None
        ui = _read_json(ui_path) if ui_path is not None and ui_path.is_file() else None
        if ui is None:
            ui_path = None
    if not isinstance(api, dict) or not all(isinstance(n, dict) and "class_type" in n for n in api.values()):
        raise ValueError(f"{api_path} is not an API-format workflow (node id -> {{class_type, inputs}})")
    models = declared_models(ui) if is_ui_format(ui) else []
    return WorkflowChoice(api_path, api, models, ui_path)


def models_folder_candidates(models_root: Path, directory: str) -> list[Path]:
    """Where ComfyUI looks for `directory` under its models folder (including its legacy folder names)."""
    legacy = {"diffusion_models": ["unet"], "text_encoders": ["clip"]}
    return [models_root / name for name in (directory, *legacy.get(directory, []))]
