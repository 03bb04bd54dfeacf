"""Browser layer: the real ComfyUI frontend in headless Chromium (Debian's /usr/bin/chromium through Playwright).

Checks that the web extension is served and registers, that every UI-format workflow in workflows/*.json loads
with all its node types known and its widget values intact (one screenshot each, path printed), that dropping it on
a server without its model files opens the missing-models dialog with exactly the files it declares, that a tiny
core-node graph queued from the page shows its output image, that the preview contract renders frame sliders, and
that the points editor on Preprocess turns clicks on the driving video's first frame into its saved `points`, and
that shift + clicking a person there moves the mask of a Preprocess run (tiny models) onto that person.
Skipped unless COMFYUI_PATH is set, /usr/bin/chromium exists and the `playwright` package is installed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_server import REPO_ROOT, release_shared_comfyui, require_comfyui, shared_comfyui
from comfyui_workflows import upstream_subgraph
from frontend_missing_models import (
    DIALOG_ROWS_JS, DROP_JS, INVALID_DIRECTORY, MISSING_MODELS_SETTING, SCROLL_LIST_TO_END_JS, declared_models,
    expected_rows,
)
from wan_animate.client import ComfyClient

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
EXTENSION_NAME = "WanAnimate.Previews"
EXTENSION_FILE = "wan_animate.js"
POINTS_EXTENSION_NAME = "WanAnimate.PointsEditor"  # web/wan_animate_points.js
PAGE_TIMEOUT_MS = 90_000
UI_WORKFLOWS = sorted(
    path for path in (REPO_ROOT / "workflows").glob("*.json")
    if {"nodes", "links"} <= set(json.loads(path.read_text(encoding="utf-8")))
)
MAX_WIDGET_NODES = 8  # widget values compared on this many nodes per workflow
PREVIEW_NODE = "WanAnimatePreprocess"  # a pack node that sends `wan_animate_previews`


def _distinct_preview_workflows() -> list[Path]:
    """The test workflows with a Preprocess node, one per distinct preprocessing graph: ComfyUI caches a node whose
    inputs it ran before, and a cached node sends no previews (the GGUF workflow preprocesses as animate_tiny)."""
    chosen: dict[str, Path] = {}
    for path in sorted((REPO_ROOT / "tests" / "workflows_test").glob("*.json")):
        workflow = json.loads(path.read_text(encoding="utf-8"))
        node_id = next((k for k, n in workflow.items() if n.get("class_type") == PREVIEW_NODE), None)
        if node_id is not None:
            chosen.setdefault(json.dumps(upstream_subgraph(workflow, node_id), sort_keys=True), path)
    return sorted(chosen.values())


PREVIEW_WORKFLOWS = _distinct_preview_workflows()

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory):
    require_comfyui()
    if not CHROMIUM.exists():
        pytest.skip(f"browser layer: {CHROMIUM} is absent (apt-get install chromium)")
    pytest.importorskip("playwright", reason="browser layer: pip install playwright (no browser download needed)")
    server = shared_comfyui(tmp_path_factory.mktemp("comfyui"))
    yield server
    release_shared_comfyui()


@pytest.fixture(scope="session")
def browser(comfyui):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class PageErrors:
    """Page errors, plus console errors/warnings that come from this pack's extension."""

    def __init__(self, page):
        self.items: list[str] = []
        page.on("pageerror", lambda error: self.items.append(f"pageerror: {error}"))
        page.on("console", self._console)
        page.on("response", self._response)

    def _console(self, message) -> None:
        source = (message.location or {}).get("url", "")
        ours = EXTENSION_FILE in source or "WanAnimate" in message.text or "wan_animate" in message.text
        if message.type in ("error", "warning") and ours:
            self.items.append(f"console {message.type}: {message.text} ({source})")

    def _response(self, response) -> None:
        if EXTENSION_FILE in response.url and response.status >= 400:
            self.items.append(f"HTTP {response.status} for {response.url}")


@pytest.fixture
def page(browser, comfyui):
    page = browser.new_page(viewport={"width": 1920, "height": 1200})
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    errors = PageErrors(page)
    page.goto(comfyui.url + "/", wait_until="domcontentloaded")
    page.wait_for_function(
        "() => window.app?.graph && window.app.vueAppReady && window.LiteGraph"
        " && Object.keys(window.LiteGraph.registered_node_types).length > 0",
    )
    page.errors = errors
    yield page
    page.close()


def _fit_view(page) -> None:
    page.evaluate("""async () => {
        try { await window.app.extensionManager.command.execute("Comfy.Canvas.FitView"); }
        catch (error) { window.app.canvas.ds.reset(); }
        window.app.canvas.setDirty(true, true);
    }""")
    page.wait_for_timeout(500)


def _wait_for(page, expression: str, tmp_path: Path, what: str, arg=None) -> None:
    """page.wait_for_function, failing with a screenshot and the collected page errors instead of a bare timeout."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(expression, arg=arg)
    except PlaywrightTimeout:
        shot = tmp_path / "timeout.png"
        page.screenshot(path=str(shot))
        pytest.fail(f"timed out waiting for {what}; screenshot {shot}; page errors {page.errors.items}")


def test_extension_is_served_and_registers(comfyui, page):
    extensions = comfyui.get_json("/extensions")
    ours = [url for url in extensions if url.endswith(f"/{EXTENSION_FILE}") and comfyui.pack_dir.name in url]
    assert ours, f"/extensions does not list {EXTENSION_FILE}: {extensions}"
    names = page.evaluate("() => window.app.extensions.map(e => e.name)")
    assert EXTENSION_NAME in names and POINTS_EXTENSION_NAME in names
    assert page.errors.items == []


def _subgraph_ids(workflow: dict) -> set[str]:
    return {subgraph["id"] for subgraph in (workflow.get("definitions") or {}).get("subgraphs") or []}


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.name)
def test_ui_workflow_loads_in_the_frontend(page, path: Path, tmp_path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    file_types = {node["type"] for node in workflow["nodes"]} - _subgraph_ids(workflow)
    registered = set(page.evaluate("() => Object.keys(window.LiteGraph.registered_node_types)"))
    assert sorted(file_types - registered) == [], "node types unknown to the frontend"

    page.evaluate(
        "async (graph) => { await window.app.loadGraphData(graph, true, true, null,"
        " {showMissingNodesDialog: false, showMissingModelsDialog: false}); }",
        workflow,
    )
    page.wait_for_timeout(300)
    alerts = page.evaluate(
        "() => [...document.querySelectorAll('.p-toast-message-warn, .p-toast-message-error')].map(e => e.textContent)"
    )
    assert alerts == [], "the frontend raised alerts while loading (schema validation, missing nodes, ...)"
    loaded = page.evaluate("""() => Object.fromEntries(window.app.graph.nodes.map(
        n => [String(n.id), {type: n.type, widgets_values: n.serialize().widgets_values ?? null}]))""")
    for node in workflow["nodes"]:
        assert str(node["id"]) in loaded, f"node {node['id']} ({node['type']}) missing from app.graph"
        assert loaded[str(node["id"])]["type"] == node["type"]
    with_widgets = [node for node in workflow["nodes"] if node.get("widgets_values")][:MAX_WIDGET_NODES]
    for node in with_widgets:
        assert loaded[str(node["id"])]["widgets_values"] == node["widgets_values"], (
            f"node {node['id']} ({node['type']}) widget values changed on load"
        )
    _fit_view(page)
    shot = tmp_path / f"{path.stem}.png"
    page.screenshot(path=str(shot))
    print(f"screenshot of {path.name}: {shot}")
    assert page.errors.items == []


def _drop_with_missing_models_dialog(page, server_url: str, path: Path, tmp_path: Path) -> None:
    """Drop the workflow file on the page (the frontend's own drop handler loads it) with the dialog enabled.

    Requests that leave the test server (the dialog asks the model hosts for file sizes) are aborted."""
    page.route(lambda url: not url.startswith(server_url), lambda route: route.abort())
    page.evaluate(f"async () => await window.app.extensionManager.setting.set('{MISSING_MODELS_SETTING}', true)")
    page.evaluate(DROP_JS, [path.read_text(encoding="utf-8"), path.name])
    _wait_for(page, "() => document.querySelector('.comfy-missing-models [role=option]') !== null", tmp_path,
              f"the missing-models dialog of {path.name}")


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=lambda p: p.name)
def test_dropped_workflow_lists_exactly_its_missing_models(page, comfyui, path: Path, tmp_path):
    """The test server's model folders hold only the tiny test models, so every file the workflow declares is missing
    and must be listed once, with its folder, its URL and the download state the frontend's rule gives it. The Read me
    note links every file too (the dialog cannot offer the .onnx downloads)."""
    workflow = json.loads(path.read_text(encoding="utf-8"))
    declared = declared_models(workflow)
    assert declared, f"{path.name} declares no model files"
    folders = {folder["name"] for folder in comfyui.get_json("/experiment/models")}
    present = [e["name"] for e in declared if e["directory"] in folders
               and e["name"] in comfyui.get_json(f"/models/{e['directory']}")]
    assert present == [], "the test server must not have the real model files"

    _drop_with_missing_models_dialog(page, comfyui.url, path, tmp_path)
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
    assert [r["label"] for r in rows if r["error"] == INVALID_DIRECTORY] == [], "model folders unknown to ComfyUI"
    assert page.locator(".p-dialog").count() == 1, "another dialog (missing nodes, load error) opened with it"
    alerts = page.evaluate(
        "() => [...document.querySelectorAll('.p-toast-message-warn, .p-toast-message-error')].map(e => e.textContent)"
    )
    assert alerts == [], "the frontend raised alerts while loading the dropped workflow"
    note_links = page.evaluate("() => [...document.querySelectorAll('.comfy-markdown a[href]')].map(a => a.href)")
    assert sorted(note_links) == sorted(e["url"] for e in declared), "the Read me note links every model file"
    assert page.errors.items == []


TINY_GRAPH_JS = """async () => {
    const app = window.app;
    app.graph.clear();
    const make = (type, pos, values) => {
        const node = window.LiteGraph.createNode(type);
        node.pos = pos;
        for (const [name, value] of Object.entries(values)) node.widgets.find(w => w.name === name).value = value;
        app.graph.add(node);
        return node;
    };
    const empty = make("EmptyImage", [80, 120], {width: 64, height: 48, batch_size: 1, color: 0});
    const invert = make("ImageInvert", [420, 120], {});
    const save = make("SaveImage", [700, 120], {filename_prefix: "browser_tiny"});
    empty.connect(0, invert, 0);
    invert.connect(0, save, 0);
    await app.queuePrompt(0);
    return String(save.id);
}"""

FIRST_IMAGE_PIXEL_JS = """(id) => {
    const image = window.app.graph.getNodeById(Number(id)).imgs[0];
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    return {size: [image.naturalWidth, image.naturalHeight], pixel: Array.from(context.getImageData(5, 5, 1, 1).data)};
}"""


def test_tiny_core_workflow_queued_from_the_page_shows_its_image(page, comfyui, tmp_path):
    save_id = page.evaluate(TINY_GRAPH_JS)
    _wait_for(page, "(id) => window.app.graph.getNodeById(Number(id))?.imgs?.[0]?.naturalWidth > 0", tmp_path,
              "the SaveImage node to show its image", arg=save_id)
    shown = page.evaluate(FIRST_IMAGE_PIXEL_JS, save_id)
    assert shown == {"size": [64, 48], "pixel": [255, 255, 255, 255]}  # black EmptyImage, inverted
    assert list(comfyui.output_dir.glob("browser_tiny_*.png"))
    _fit_view(page)
    shot = tmp_path / "tiny_core_workflow.png"
    page.screenshot(path=str(shot))
    print(f"screenshot of the queued core graph: {shot}")
    assert page.errors.items == []


PROBE_JS = """async () => {
    const app = window.app;
    app.graph.clear();
    const probe = window.LiteGraph.createNode("WanAnimateTestPreviewProbe");
    probe.pos = [120, 100];
    probe.widgets.find(w => w.name === "frames").value = 5;
    probe.widgets.find(w => w.name === "kinds").value = "pose,face,mask";
    app.graph.add(probe);
    await app.queuePrompt(0);
    return String(probe.id);
}"""

GROUPS_JS = """(id) => {
    const node = window.app.graph.getNodeById(Number(id));
    const root = node.widgets.find(w => w.name === "wan_animate_previews").element;
    return {
        kinds: root.dataset.kinds,
        groups: [...root.querySelectorAll(".wa-group")].map(g => ({
            kind: g.dataset.kind, count: Number(g.dataset.count), frame: Number(g.dataset.frame),
            src: g.querySelector("img").getAttribute("src"),
        })),
        corePreview: node.widgets.some(w => w.name === "$$canvas-image-preview"),
    };
}"""


def test_preview_contract_renders_frame_sliders(page, tmp_path):
    probe_id = page.evaluate(PROBE_JS)
    _wait_for(
        page,
        "(id) => window.app.graph.getNodeById(Number(id)).widgets.find(w => w.name === 'wan_animate_previews')"
        "?.element.querySelectorAll('.wa-group img').length === 3"
        " && [...document.querySelectorAll('.wa-group img')].every(i => i.complete && i.naturalWidth > 0)",
        tmp_path, "the probe's three preview groups", arg=probe_id,
    )
    state = page.evaluate(GROUPS_JS, probe_id)
    assert state["kinds"] == "pose,face,mask"
    assert [(g["kind"], g["count"], g["frame"]) for g in state["groups"]] == [
        ("pose", 5, 0), ("face", 5, 0), ("mask", 5, 0)
    ]
    assert all("wan_probe_" + g["kind"] + "_000_" in g["src"] and "type=temp" in g["src"] for g in state["groups"])
    assert state["corePreview"] is False  # the frontend's duplicate grid is replaced by the sliders

    slider = page.locator(".wa-group[data-kind=face] input[type=range]")
    slider.fill("3")
    face = page.evaluate(GROUPS_JS, probe_id)["groups"][1]
    assert face["frame"] == 3 and "wan_probe_face_003_" in face["src"]

    page.locator(".wa-group[data-kind=pose] button").click()
    _wait_for(page, "() => document.querySelector('.wa-group[data-kind=pose]').dataset.frame !== '0'", tmp_path,
              "the play button to advance the pose frame")
    page.locator(".wa-group[data-kind=pose] button").click()

    _fit_view(page)
    shot = tmp_path / "preview_probe.png"
    page.screenshot(path=str(shot))
    print(f"screenshot of the preview widget: {shot}")
    assert page.errors.items == []


def test_preview_count_mismatch_is_reported_on_the_node(page):
    """A node that declares more preview frames than it sent shows the mismatch instead of failing silently."""
    message = page.evaluate("""() => {
        const app = window.app;
        app.graph.clear();
        const probe = window.LiteGraph.createNode("WanAnimateTestPreviewProbe");
        app.graph.add(probe);
        probe.onExecuted({images: [{filename: "x.png", subfolder: "", type: "temp"}],
                          wan_animate_previews: [{kind: "pose", count: 2}]});
        return probe.widgets.find(w => w.name === "wan_animate_previews").element.textContent;
    }""")
    assert message == 'wan_animate_previews group "pose" wants images 0..1 but the node sent 1'
    warnings = [item for item in page.errors.items if "wants images 0..1" in item]
    assert len(warnings) == 1 and len(page.errors.items) == 1



@pytest.mark.parametrize("path", PREVIEW_WORKFLOWS, ids=lambda p: p.name)
def test_pack_preview_node_shows_its_frames_in_the_page(page, comfyui, path: Path, tmp_path):
    """Run the preprocess part of a tests/workflows_test graph for the page's client id: the frontend receives the
    real `executed` message and the extension turns the node's previews into frame sliders."""
    workflow = json.loads(path.read_text(encoding="utf-8"))
    node_id = next(k for k, n in workflow.items() if n["class_type"] == PREVIEW_NODE)
    part = upstream_subgraph(workflow, node_id)
    part["preview_output"] = {"class_type": "PreviewImage", "inputs": {"images": [node_id, 1]}}
    page.evaluate(
        """([type, id]) => {
            window.app.graph.clear();
            const node = window.LiteGraph.createNode(type);
            node.id = Number(id);
            node.pos = [80, 60];
            window.app.graph.add(node);
        }""",
        [PREVIEW_NODE, node_id],
    )
    client = ComfyClient(comfyui.url, use_websocket=False)  # a second /ws with the page's id would take its messages
    client.client_id = page.evaluate("() => window.comfyAPI.api.api.clientId")
    entry = client.wait(client.queue(part), timeout=600.0)
    declared = entry["outputs"][node_id]["wan_animate_previews"]
    _wait_for(
        page,
        "(id) => { const w = window.app.graph.getNodeById(Number(id)).widgets"
        ".find(w => w.name === 'wan_animate_previews');"
        " const images = w ? [...w.element.querySelectorAll('.wa-group img')] : [];"
        " return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0); }",
        tmp_path, f"the previews of {PREVIEW_NODE}", arg=node_id,
    )
    state = page.evaluate(GROUPS_JS, node_id)
    assert [(g["kind"], g["count"]) for g in state["groups"]] == [(d["kind"], d["count"]) for d in declared]
    assert state["corePreview"] is False
    _fit_view(page)
    shot = tmp_path / f"{path.stem}_{PREVIEW_NODE}.png"
    page.screenshot(path=str(shot))
    print(f"screenshot of {PREVIEW_NODE} previews from {path.name}: {shot} (groups {state['kinds']})")
    assert page.errors.items == []


def test_core_node_with_the_same_prefix_is_left_alone(page):
    """ComfyUI core's WanAnimateToVideo shares the class-name prefix; the extension only serves custom nodes."""
    state = page.evaluate("""() => {
        const app = window.app;
        app.graph.clear();
        const core = window.LiteGraph.createNode("WanAnimateToVideo");
        app.graph.add(core);
        core.onExecuted?.({images: [], wan_animate_previews: []});
        return {module: core.constructor.nodeData.python_module,
                widgets: core.widgets.map(w => w.name).filter(n => n === "wan_animate_previews")};
    }""")
    assert state == {"module": "comfy_extras.nodes_wan", "widgets": []}
    assert page.errors.items == []


POINTS_GRAPH_JS = """(file) => {
    const app = window.app, LiteGraph = window.LiteGraph;
    app.graph.clear();
    const load = LiteGraph.createNode("LoadVideo");
    const parts = LiteGraph.createNode("GetVideoComponents");
    const node = LiteGraph.createNode("WanAnimatePreprocess");
    load.pos = [20, 20]; parts.pos = [20, 420]; node.pos = [420, 20];
    [load, parts, node].forEach(n => app.graph.add(n));
    load.widgets.find(w => w.name === "file").value = file;
    load.connect(0, parts, 0);
    parts.connect(0, node, node.findInputSlot("driving_video"));
    app.canvas.ds.offset = [0, 0];
    app.canvas.ds.scale = 1;
    app.canvas.setDirty(true, true);
    return node.id;
}"""


def _write_first_frame_video(path: Path) -> None:
    """A 4-frame 160x96 WebM (VP8): green first frame, red after it."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx", rate=8)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for index in range(4):
            frame = np.zeros((96, 160, 3), np.uint8)
            frame[..., 1 if index == 0 else 0] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_points_editor_saves_left_and_right_clicks_in_the_workflow(page, comfyui, tmp_path):
    """The Preprocess node shows the first frame of the video loaded upstream; a left click adds a positive point,
    a right click a negative one, both saved (as fractions of the frame) in the hidden `points` widget and the
    serialized workflow; undo removes the last one; shift + click picks the person to follow."""
    _write_first_frame_video(comfyui.input_dir / "points_probe.webm")
    node_id = page.evaluate(POINTS_GRAPH_JS, "points_probe.webm")
    _wait_for(page, "() => { const v = document.querySelector('.wan-animate-points video.wa-points-media');"
                    " return v && v.readyState >= 2 && v.getBoundingClientRect().width > 50; }",
              tmp_path, "the driving video's first frame on the Preprocess node")
    media = page.locator(".wan-animate-points .wa-points-media")
    assert "filename=points_probe.webm" in media.get_attribute("src") and "type=input" in media.get_attribute("src")
    assert page.evaluate("(id) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'points').hidden",
                         node_id) is True
    box = media.bounding_box()
    page.mouse.click(box["x"] + 0.25 * box["width"], box["y"] + 0.5 * box["height"])
    page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.25 * box["height"], button="right")
    value = page.evaluate("(id) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'points').value",
                          node_id)
    points = json.loads(value)
    assert [[round(v, 2) for v in p] for p in points["positive"]] == [[0.25, 0.5]]
    assert [[round(v, 2) for v in p] for p in points["negative"]] == [[0.75, 0.25]]
    assert page.locator(".wa-point[data-label='1']").count() == 1
    assert page.locator(".wa-point[data-label='0']").count() == 1
    saved = page.evaluate("(id) => window.app.graph.serialize().nodes.find(n => n.id === id).widgets_values", node_id)
    assert value in saved
    page.locator(".wan-animate-points button", has_text="undo").click()
    after_undo = page.evaluate("(id) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'points')"
                               ".value", node_id)
    assert json.loads(after_undo)["negative"] == [] and json.loads(after_undo)["positive"] == points["positive"]
    media.click(position={"x": 0.5 * box["width"], "y": 0.75 * box["height"]}, modifiers=["Shift"])
    person = page.evaluate("(id) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'person').value",
                           node_id)
    x, y = (float(v) for v in person.split()[1:])
    assert person.startswith("point ") and (round(x, 2), round(y, 2)) == (0.5, 0.75)
    assert page.locator(".wa-point[data-label='person']").count() == 1
    assert page.evaluate("(id) => window.app.graph.getNodeById(id).widgets.find(w => w.name === 'points').value",
                         node_id) == after_undo  # shift + click chose the person, added no SAM2 point
    shot = tmp_path / "points_editor.png"
    page.screenshot(path=str(shot))
    print(f"screenshot of the points editor: {shot}")
    assert page.errors.items == []


PERSON_RUN_GRAPH_JS = """([video, character, detector, pose]) => {
    const app = window.app, LiteGraph = window.LiteGraph;
    app.graph.clear();
    const make = (type, pos) => { const n = LiteGraph.createNode(type); n.pos = pos; app.graph.add(n); return n; };
    const set = (node, name, value) => { node.widgets.find(w => w.name === name).value = value; };
    const load = make("LoadVideo", [20, 20]);
    const parts = make("GetVideoComponents", [20, 420]);
    const image = make("LoadImage", [20, 560]);
    const models = make("WanAnimatePoseModelLoader", [20, 900]);
    const node = make("WanAnimatePreprocess", [420, 20]);
    const preview = make("PreviewImage", [820, 20]);
    set(load, "file", video); set(image, "image", character);
    set(models, "detector", detector); set(models, "pose_model", pose);
    set(node, "mode", "replace"); set(node, "width", 256); set(node, "height", 128);
    load.connect(0, parts, 0);
    parts.connect(0, node, node.findInputSlot("driving_video"));
    image.connect(0, node, node.findInputSlot("character_image"));
    models.connect(0, node, node.findInputSlot("pose_models"));
    node.connect(3, preview, 0);
    app.canvas.ds.offset = [0, 0];
    app.canvas.ds.scale = 1;
    app.canvas.setDirty(true, true);
    return node.id;
}"""


def _mask_preview_columns(page, comfyui, node_id, previous: str | None, tmp_path) -> tuple[str, float]:
    """(file name, leftmost masked column as a fraction of the width) of the node's first mask preview frame, once
    a preview other than `previous` is shown."""
    import io
    import urllib.request

    import numpy as np
    from PIL import Image

    mask_image = ("window.app.graph.getNodeById(id).widgets.find(w => w.name === 'wan_animate_previews')"
                  "?.element.querySelector('.wa-group[data-kind=mask] img')")
    _wait_for(page, f"([id, previous]) => {{ const img = {mask_image};"
                    " return img && img.complete && img.naturalWidth > 0 && !img.src.includes(previous); }",
              tmp_path, "the mask preview of the run", arg=[node_id, previous or "\u0000"])
    source = page.evaluate(f"(id) => {mask_image}.src", node_id)
    assert source.startswith(comfyui.url)
    with urllib.request.urlopen(source, timeout=30) as response:
        mask = np.asarray(Image.open(io.BytesIO(response.read())).convert("L")) > 127  # [H, W]
    name = source.split("filename=")[1].split("&")[0]
    columns = np.flatnonzero(mask.any(axis=0))
    return name, columns.min() / mask.shape[1]


def test_clicking_a_person_moves_the_mask_preview(page, comfyui, tmp_path):
    """End to end in the page with the tiny models: shift + click on the smaller person on the right of the first
    frame, run Preprocess (Replacement, pose-box mask): the mask preview moves from the largest person (left) to
    the clicked one."""
    import av
    import numpy as np

    from tiny_models import FILES

    with av.open(str(comfyui.input_dir / "two_people.webm"), "w") as container:
        stream = container.add_stream("libvpx", rate=8)
        stream.width, stream.height, stream.pix_fmt = 256, 128, "yuv420p"
        for _ in range(3):  # a big red person on the left, a smaller green one on the right
            frame = np.zeros((128, 256, 3), np.uint8)
            frame[10:120, 20:100, 0] = 255
            frame[30:110, 170:230, 1] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    if not (comfyui.input_dir / FILES["character"]).exists():
        pytest.skip("the tiny test assets are not in this ComfyUI's input folder")
    node_id = page.evaluate(PERSON_RUN_GRAPH_JS, ["two_people.webm", FILES["character"], FILES["detector"],
                                                  FILES["pose"]])
    _wait_for(page, "() => { const v = document.querySelector('.wan-animate-points video.wa-points-media');"
                    " return v && v.readyState >= 2 && v.getBoundingClientRect().width > 50; }",
              tmp_path, "the two-person video's first frame on the Preprocess node")
    media = page.locator(".wan-animate-points .wa-points-media")
    box = media.bounding_box()
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    largest, left_edge = _mask_preview_columns(page, comfyui, node_id, None, tmp_path)
    assert left_edge < 100 / 256
    media.click(position={"x": 200 / 256 * box["width"], "y": 70 / 128 * box["height"]}, modifiers=["Shift"])
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    _, clicked_edge = _mask_preview_columns(page, comfyui, node_id, largest, tmp_path)
    assert clicked_edge > 130 / 256  # the mask is now on the person on the right
    shot = tmp_path / "person_click_mask.png"
    page.screenshot(path=str(shot))
    print(f"screenshot of the mask after clicking the right person: {shot}")
    assert page.errors.items == []
