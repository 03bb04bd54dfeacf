"""Browser layer: dropping each UI workflow on a ComfyUI without its model files opens the missing-models dialog.

The frontend (comfyui_frontend_package 1.35.9) builds that dialog in `ComfyApp.loadGraphData` and its
`MissingModelsWarning` component; `expected_rows` restates the rule read from the bundle (docs/COMFYUI_TESTING.md,
"Missing-models dialog"). The test server's model folders only hold the tiny test models, so every file a workflow
declares is missing. Requests that leave the test server (the dialog asks the model hosts for file sizes) are
aborted: the test never touches the network. Skipped like the rest of the browser layer.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_browser_workflows import UI_WORKFLOWS, _fit_view, browser, comfyui, page  # noqa: F401 (fixtures)

MISSING_MODELS_SETTING = "Comfy.Workflow.ShowMissingModelsWarning"
# MissingModelsWarning's download rule: a URL from these hosts (or one of three fixed URLs) and a file name with
# one of these suffixes; anything else is listed with an error and its Download / Copy URL buttons disabled.
ALLOWED_SOURCES = ("https://civitai.com/", "https://huggingface.co/", "http://localhost:")
ALLOWED_SUFFIXES = (".safetensors", ".sft")
WHITELISTED_URLS = frozenset({
    "https://huggingface.co/stabilityai/stable-zero123/resolve/main/stable_zero123.ckpt",
    "https://huggingface.co/TencentARC/T2I-Adapter/resolve/main/models/t2iadapter_depth_sd14v1.pth?download=true",
    "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
})
INVALID_DIRECTORY = "Invalid directory specified (does this require custom nodes?)"

pytestmark = pytest.mark.browser

DROP_JS = """([text, name]) => {
    const data = new DataTransfer();
    data.items.add(new File([text], name, {type: "application/json"}));
    document.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
}"""

DIALOG_ROWS_JS = """() => [...document.querySelectorAll('.comfy-missing-models [role=option]')].map(row => {
    const label = row.querySelector('span[title]');
    const buttons = [...row.querySelectorAll('button')];
    const error = row.querySelector('.p-message, [data-pc-name=message]');
    return {
        label: label.textContent.trim(),
        url: label.getAttribute('title'),
        error: error ? error.textContent.trim() : null,
        download_url: buttons[0].getAttribute('title'),
        buttons_disabled: buttons.map(b => b.disabled),
    };
})"""


SCROLL_LIST_TO_END_JS = """() => {
    const list = document.querySelector('.comfy-missing-models [role=option]').closest('[role=listbox]').parentElement;
    list.scrollTop = list.scrollHeight;
}"""


def declared_models(workflow: dict) -> list[dict]:
    """Every `properties.models` entry of the workflow's nodes, in node order."""
    return [entry for node in workflow["nodes"] for entry in (node.get("properties") or {}).get("models") or []]


def selected_models(workflow: dict) -> list[dict]:
    """The models the frontend checks: a node's entries whose `name` is one of its string widget values, then the
    workflow's root `models`; entries without `url` or `hash` are dropped, duplicates (same url, else hash) merged."""
    found = []
    for node in workflow["nodes"]:
        values = node.get("widgets_values") or []
        strings = {v for v in (values.values() if isinstance(values, dict) else values) if isinstance(v, str) and v.strip()}
        found += [entry for entry in (node.get("properties") or {}).get("models") or [] if entry["name"] in strings]
    found += workflow.get("models") or []
    unique: dict[str, dict] = {}
    for entry in found:
        key = entry.get("url") or entry.get("hash")
        if key:
            unique.setdefault(key, entry)
    return list(unique.values())


def download_error(entry: dict, model_folders: set[str]) -> str | None:
    """The error MissingModelsWarning shows for a missing file, None when it offers the download."""
    url, name = entry["url"], entry["name"]
    if entry["directory"] not in model_folders:
        return INVALID_DIRECTORY
    if url in WHITELISTED_URLS:
        return None
    if not url.startswith(ALLOWED_SOURCES):
        return f"Download not allowed from source '{url}', only allowed from '" + "', '".join(ALLOWED_SOURCES) + "'"
    if not name.endswith(ALLOWED_SUFFIXES):
        return "Only allowed suffixes are: '" + "', '".join(ALLOWED_SUFFIXES) + "'"
    return None


def expected_rows(workflow: dict, model_folders: set[str]) -> list[dict]:
    """The dialog's rows for a server that has none of the workflow's files."""
    rows = []
    for entry in selected_models(workflow):
        error = download_error(entry, model_folders)
        rows.append({
            "label": f"{entry['directory']} / {entry['name']}", "url": entry["url"], "error": error,
            "download_url": entry["url"], "buttons_disabled": [error is not None] * 2,
        })
    return rows


def _drop_with_missing_models_dialog(page, server_url: str, path: Path) -> None:
    """Drop the workflow file on the page (the frontend's own drop handler loads it) with the dialog enabled."""
    page.route(lambda url: not url.startswith(server_url), lambda route: route.abort())
    page.evaluate(f"async () => await window.app.extensionManager.setting.set('{MISSING_MODELS_SETTING}', true)")
    page.evaluate(DROP_JS, [path.read_text(encoding="utf-8"), path.name])
    page.locator(".comfy-missing-models").wait_for(state="visible")


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.name)
def test_dropped_workflow_lists_exactly_its_missing_models(page, comfyui, path: Path, tmp_path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    declared = declared_models(workflow)
    assert declared, f"{path.name} declares no model files"
    folders = {folder["name"] for folder in comfyui.get_json("/experiment/models")}
    present = [e["name"] for e in declared if e["directory"] in folders
               and e["name"] in comfyui.get_json(f"/models/{e['directory']}")]
    assert present == [], "the test server must not have the real model files"

    _drop_with_missing_models_dialog(page, comfyui.url, path)
    page.wait_for_function("(count) => window.app.graph.nodes.length === count", arg=len(workflow["nodes"]))
    page.wait_for_timeout(500)
    rows = page.evaluate(DIALOG_ROWS_JS)
    shots = [tmp_path / f"{path.stem}_missing_models_top.png", tmp_path / f"{path.stem}_missing_models_end.png"]
    page.screenshot(path=str(shots[0]))
    page.evaluate(SCROLL_LIST_TO_END_JS)
    page.wait_for_timeout(200)
    page.screenshot(path=str(shots[1]))  # the list scrolls: its last rows
    print(f"missing-models dialog of {path.name}: {shots[0]} {shots[1]}")
    for row in rows:
        print(f"  {row['label']}  <- {row['url']}  error: {row['error']}")

    assert sorted(r["label"] for r in rows) == sorted(f"{e['directory']} / {e['name']}" for e in declared)
    assert sorted(rows, key=lambda r: r["label"]) == sorted(expected_rows(workflow, folders), key=lambda r: r["label"])
    assert page.locator(".p-dialog").count() == 1, "another dialog (missing nodes, load error) opened with it"
    _fit_view(page)
    assert page.errors.items == []
