"""Start and stop a real ComfyUI (``$COMFYUI_PATH``) with this pack linked, for the comfyui and browser test layers.

Used two ways:
- from tests: ``shared_comfyui(tmp_root)`` / ``release_shared_comfyui()`` (the `comfyui` fixtures of the test modules),
  or the ``running_comfyui(...)`` context manager; everything skips when COMFYUI_PATH is unset;
- as a launcher: ``cd $COMFYUI_PATH && python /path/to/tests/comfyui_server.py --cpu --port 8188`` runs ComfyUI's
  main.py in this process after the CPU-torch accommodations described in docs/COMFYUI_TESTING.md.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
COMFYUI_PATH_ENV = "COMFYUI_PATH"
PACK_LINK_NAME = "comfyui-wan-animate"
CPU_SITE_DIR = "cpu_site"  # optional folder inside COMFYUI_PATH with torchvision etc. installed by `pip --target`
PROBE_NODES_DIR = REPO_ROOT / "tests" / "comfyui_probe_nodes"  # test-only nodes, added as an extra custom_nodes path
FRONTEND_SETTINGS = {  # no first-run template browser or minimap over the canvas; readable text at any zoom
    "Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "LiteGraph.Canvas.MinFontSizeForLOD": 1,
}
STARTUP_TIMEOUT_S = 180.0


def comfyui_path() -> Path | None:
    """The ComfyUI checkout named by $COMFYUI_PATH, or None when unset."""
    value = os.environ.get(COMFYUI_PATH_ENV)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not (path / "main.py").is_file():
        raise FileNotFoundError(f"COMFYUI_PATH={value} has no main.py; expected a ComfyUI checkout")
    return path


def require_comfyui() -> Path:
    """The ComfyUI checkout, skipping the calling test when COMFYUI_PATH is unset."""
    import pytest

    path = comfyui_path()
    if path is None:
        pytest.skip("real-ComfyUI layer: set COMFYUI_PATH to a ComfyUI checkout (docs/COMFYUI_TESTING.md)")
    return path


def link_pack(comfyui: Path, pack: Path = REPO_ROOT) -> Path:
    """The entry of comfyui/custom_nodes that is this pack, creating a symlink when none points at it."""
    custom_nodes = comfyui / "custom_nodes"
    custom_nodes.mkdir(exist_ok=True)
    pack = pack.resolve()
    for entry in sorted(custom_nodes.iterdir()):
        if entry.is_dir() and entry.resolve() == pack:
            return entry
    link = custom_nodes / PACK_LINK_NAME
    if link.is_symlink() or link.exists():
        raise FileExistsError(f"{link} exists but is not this pack ({pack}); remove it or link the pack by hand")
    link.symlink_to(pack, target_is_directory=True)
    return link


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ComfyUIServer:
    """A running ComfyUI: its URL, its process, where its log and folders are."""

    url: str
    process: subprocess.Popen
    log_path: Path
    pack_dir: Path
    work_dir: Path
    _object_info: dict | None = field(default=None, repr=False)

    @property
    def input_dir(self) -> Path:
        return self.work_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.work_dir / "output"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get_json(self, route: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.url + route, timeout=timeout) as response:
            return json.loads(response.read())

    def post_json(self, route: str, body: dict, timeout: float = 30.0):
        """POST `body`; returns (status, parsed JSON) also for 4xx answers, which carry ComfyUI's errors."""
        request = urllib.request.Request(
            self.url + route, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def object_info(self) -> dict:
        """GET /object_info once (it is large) and keep it."""
        if self._object_info is None:
            self._object_info = self.get_json("/object_info", timeout=120.0)
        return self._object_info

    def pack_import_errors(self) -> list[str]:
        """Log lines where ComfyUI reports that it could not import this pack."""
        name = self.pack_dir.name
        return [
            line for line in self.log_text().splitlines()
            if name in line and ("IMPORT FAILED" in line or "Cannot import" in line)
        ]

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def write_test_assets(work_dir: Path) -> Path | None:
    """The tiny models and inputs of tests/workflows_test (tests/tiny_models.py), written under work_dir/assets.

    Returns the assets folder (`models/<folder>/...` and `input/...`), or None when the suite has no tiny-model writer.
    """
    try:
        from tiny_models import write_tiny_models
    except ImportError:
        return None
    assets = work_dir / "assets"
    write_tiny_models(assets)
    return assets


def _extra_paths_yaml(assets: Path | None) -> str:
    """extra_model_paths.yaml: the probe nodes as extra custom nodes, the test assets' model folders."""
    lines = ["wan_animate_tests:", f"  custom_nodes: {json.dumps(str(PROBE_NODES_DIR))}"]
    models = assets / "models" if assets is not None else None
    if models is not None and models.is_dir():
        lines += [f"  {folder.name}: {json.dumps(str(folder))}" for folder in sorted(models.iterdir()) if folder.is_dir()]
    return "\n".join(lines) + "\n"


def _server_args(port: int, work_dir: Path, extra_args: tuple[str, ...]) -> list[str]:
    """ComfyUI arguments: CPU, loopback, every writable folder inside `work_dir`, probe nodes and test assets."""
    folders = {name: work_dir / name for name in ("input", "output", "temp", "user")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    settings = folders["user"] / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps(FRONTEND_SETTINGS))
    assets = work_dir / "assets"
    if (assets / "input").is_dir():
        shutil.copytree(assets / "input", folders["input"], dirs_exist_ok=True)
    extra_paths = work_dir / "extra_model_paths.yaml"
    extra_paths.write_text(_extra_paths_yaml(assets if assets.is_dir() else None))
    return [
        "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
        "--input-directory", str(folders["input"]), "--output-directory", str(folders["output"]),
        "--temp-directory", str(folders["temp"]), "--user-directory", str(folders["user"]),
        "--database-url", "sqlite:///:memory:", "--extra-model-paths-config", str(extra_paths), *extra_args,
    ]


def _wait_until_ready(server: ComfyUIServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = "\n".join(server.log_text().splitlines()[-40:])
            raise RuntimeError(f"ComfyUI exited with code {server.process.returncode} while starting:\n{tail}")
        try:
            server.get_json("/system_stats", timeout=2.0)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            time.sleep(0.5)
    server.stop()
    tail = "\n".join(server.log_text().splitlines()[-40:])
    raise TimeoutError(f"ComfyUI did not answer /system_stats within {timeout:.0f} s; log tail:\n{tail}")


@contextmanager
def running_comfyui(
    comfyui: Path, work_dir: Path, extra_args: tuple[str, ...] = (), timeout: float = STARTUP_TIMEOUT_S
) -> Iterator[ComfyUIServer]:
    """Link the pack, start ComfyUI headless on a free loopback port with `--cpu`, yield it, stop it.

    The log goes to work_dir/comfyui.log; input/output/temp/user folders live in work_dir; the database is in memory.
    """
    pack_dir = link_pack(comfyui)
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = work_dir / "comfyui.log"
    command = [sys.executable, "-u", str(Path(__file__).resolve()), *_server_args(port, work_dir, extra_args)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = ComfyUIServer(f"http://127.0.0.1:{port}", process, log_path, pack_dir, work_dir)
    try:
        _wait_until_ready(server, timeout)
        yield server
    finally:
        server.stop()


_shared: dict = {"server": None, "context": None, "users": 0}


def shared_comfyui(work_dir: Path) -> ComfyUIServer:
    """One ComfyUI for the whole test session (started by the first caller); pair with release_shared_comfyui().

    Its model folders and input folder also hold the test assets (write_test_assets), so tests/workflows_test runs.
    """
    comfyui = require_comfyui()
    if _shared["server"] is None:
        write_test_assets(work_dir)
        context = running_comfyui(comfyui, work_dir)
        _shared["server"] = context.__enter__()
        _shared["context"] = context
    _shared["users"] += 1
    return _shared["server"]


def release_shared_comfyui() -> None:
    """Stop the shared ComfyUI once its last user released it."""
    _shared["users"] -= 1
    if _shared["users"] == 0 and _shared["context"] is not None:
        context = _shared["context"]
        _shared.update(server=None, context=None)
        context.__exit__(None, None, None)


# ---- workflows: check API-format graphs against /object_info and queue them ---------------------------------------

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


# ---- launcher: run ComfyUI's main.py in this process -------------------------------------------------------------

_torchvision_op_library = None


def _import_torchvision_without_compiled_ops() -> None:
    """Make `import torchvision` work when its compiled ops cannot load (PyPI's CUDA-linked build beside CPU torch).

    torchvision registers fake kernels for `torchvision::nms`/`qnms` at import, which fails when the compiled library
    did not define those ops. Defining their schemas lets the pure-Python parts (transforms, which ComfyUI imports at
    start) load; calling those two ops then raises. A torchvision whose ops load is left untouched.
    """
    global _torchvision_op_library
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _torchvision_op_library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _torchvision_op_library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401,F811

    print(f"[comfyui_server] torchvision {torchvision.__version__} imported without its compiled ops", flush=True)


def launch_comfyui_here(argv: list[str]) -> None:
    """Run ./main.py (cwd = the ComfyUI checkout) with `argv`, after the CPU-site and torchvision accommodations."""
    import runpy

    comfyui = Path.cwd()
    if not (comfyui / "main.py").is_file():
        raise SystemExit(f"run this from a ComfyUI checkout: {comfyui}/main.py does not exist")
    sys.path[0] = str(comfyui)
    cpu_site = comfyui / CPU_SITE_DIR
    if cpu_site.is_dir():
        sys.path.insert(1, str(cpu_site))
    _import_torchvision_without_compiled_ops()
    sys.argv = [str(comfyui / "main.py"), *argv]
    runpy.run_path(str(comfyui / "main.py"), run_name="__main__")


if __name__ == "__main__":
    launch_comfyui_here(sys.argv[1:])
