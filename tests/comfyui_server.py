"""Start and stop a real ComfyUI (``$COMFYUI_PATH``) with this pack linked, for the comfyui and browser test layers.

Tests use ``shared_comfyui(tmp_root)`` / ``release_shared_comfyui()`` (the `comfyui` fixtures of the test modules),
or the ``running_comfyui(...)`` context manager; everything skips when COMFYUI_PATH is unset. Linking, starting and
stopping are the library's (wan_animate.comfyui_process, as `python3 -m wan_animate.run` does); ComfyUI runs through
tests/comfyui_launcher.py for the CPU-torch accommodations.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from wan_animate.comfyui_process import StartedComfyUI, link_pack, start_comfyui

REPO_ROOT = Path(__file__).resolve().parent.parent
COMFYUI_PATH_ENV = "COMFYUI_PATH"
LAUNCHER = Path(__file__).resolve().parent / "comfyui_launcher.py"
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


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ComfyUIServer(StartedComfyUI):
    """A running ComfyUI: its URL, its process, where its log and folders are."""

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


def _server_args(work_dir: Path, extra_args: tuple[str, ...]) -> list[str]:
    """ComfyUI arguments besides listen/port: CPU, every writable folder inside `work_dir`, probe nodes, test assets."""
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
        "--cpu", "--disable-auto-launch",
        "--input-directory", str(folders["input"]), "--output-directory", str(folders["output"]),
        "--temp-directory", str(folders["temp"]), "--user-directory", str(folders["user"]),
        "--database-url", "sqlite:///:memory:", "--extra-model-paths-config", str(extra_paths), *extra_args,
    ]


@contextmanager
def running_comfyui(
    comfyui: Path, work_dir: Path, extra_args: tuple[str, ...] = (), timeout: float = STARTUP_TIMEOUT_S
) -> Iterator[ComfyUIServer]:
    """Link the pack, start ComfyUI headless on a free loopback port with `--cpu`, yield it, stop it.

    The log goes to work_dir/wan_animate_comfyui.log; input/output/temp/user folders live in work_dir; the database
    is in memory.
    """
    pack_dir = link_pack(comfyui)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = start_comfyui(comfyui, free_port(), work_dir, sys.executable, _server_args(work_dir, extra_args),
                            timeout, launcher=("-u", str(LAUNCHER)))
    server = ComfyUIServer(started.url, started.process, started.log_path, pack_dir, work_dir)
    try:
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
