"""ComfyUI's missing-models dialog, restated from its frontend bundle (comfyui_frontend_package 1.35.9), for the
browser test that drops each UI workflow on a server without its model files (docs/COMFYUI_TESTING.md,
"Missing-models dialog").

`ComfyApp.loadGraphData` collects the models to check (`selected_models`); its `MissingModelsWarning` component shows
one row per missing file, with an error instead of a usable download for some of them (`download_error`).
"""
from __future__ import annotations

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
        values = values.values() if isinstance(values, dict) else values
        strings = {value for value in values if isinstance(value, str) and value.strip()}
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
