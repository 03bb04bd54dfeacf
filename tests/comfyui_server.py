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
