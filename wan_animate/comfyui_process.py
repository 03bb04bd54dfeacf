"""A local ComfyUI for one job: find a running one or start `main.py` headless with this pack linked, then stop it.

Standard library only; ComfyUI runs in its own process with the Python the user names.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from wan_animate.workflow_files import REPO_ROOT

PACK_LINK_NAME = "comfyui-wan-animate"
LOG_NAME = "wan_animate_comfyui.log"


class ComfyUIStartError(RuntimeError):
    """ComfyUI could not be found or started; the message says what to fix."""


def check_comfyui_folder(folder: Path) -> Path:
    """The resolved ComfyUI folder, or an error saying what is missing."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ComfyUIStartError(f"ComfyUI folder {folder} does not exist; give --comfyui the folder that holds "
                                f"ComfyUI's main.py (or the URL of a running ComfyUI)")
    if not (folder / "main.py").is_file():
        raise ComfyUIStartError(f"{folder} is not a ComfyUI folder: it has no main.py")
    return folder.resolve()


def link_pack(comfyui: Path, pack: Path = REPO_ROOT) -> Path:
    """The custom_nodes entry that is this pack, creating the symlink custom_nodes/comfyui-wan-animate if none is.

    `comfyui` is the folder holding custom_nodes/ (ComfyUI's own, or its --base-directory)."""
    custom_nodes = comfyui / "custom_nodes"
    custom_nodes.mkdir(exist_ok=True)
    pack = pack.resolve()
    for entry in sorted(custom_nodes.iterdir()):
        if entry.is_dir() and entry.resolve() == pack:
            return entry
    link = custom_nodes / PACK_LINK_NAME
    if link.is_symlink() or link.exists():
        raise ComfyUIStartError(f"{link} exists but is not this checkout ({pack}); remove it, or run this command "
                                f"from that copy of the pack")
    try:
        link.symlink_to(pack, target_is_directory=True)
    except OSError as error:  # e.g. Windows without the right to create symlinks
        raise ComfyUIStartError(f"cannot link {pack} into {custom_nodes} ({error}); clone or copy the pack there "
                                f"instead") from error
    return link


def comfyui_answers(url: str, timeout: float = 2.0) -> bool | None:
    """True when `url` answers /system_stats as ComfyUI, False when something else answers, None when nothing does."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/system_stats", timeout=timeout) as response:
            stats = json.loads(response.read())
    except urllib.error.HTTPError:
        return False
    except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout):
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(stats, dict) and isinstance(stats.get("system"), dict)


@dataclass
class StartedComfyUI:
    """A ComfyUI process this command started; stop() ends it."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate, then kill if it has not exited within `timeout` seconds."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def start_comfyui(comfyui: Path, port: int, log_dir: Path, python: str = sys.executable,
                  extra_args: list[str] = (), timeout: float = 600.0,
                  launcher: tuple[str, ...] = ("main.py",)) -> StartedComfyUI:
    """Run `python *launcher --listen 127.0.0.1 --port PORT *extra_args` in `comfyui`; return once /system_stats
    answers.

    `launcher` is ComfyUI's main.py unless a caller wraps it (the test harness's launcher script). Its output goes to
    LOG_DIR/wan_animate_comfyui.log; a start that fails or times out stops the process and raises with the log's last
    lines.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / LOG_NAME
    command = [python, *launcher, "--listen", "127.0.0.1", "--port", str(port), *extra_args]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        try:
            process = subprocess.Popen(command, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        except OSError as error:
            raise ComfyUIStartError(f"cannot run {python}: {error}; choose the Python of your ComfyUI with --python")\
                from error
    server = StartedComfyUI(url, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ComfyUIStartError(f"ComfyUI exited with code {process.returncode} while starting "
                                    f"({' '.join(command)}; if {python} is not the Python your ComfyUI runs with, "
                                    f"name that one with --python); last lines of {log_path}:\n{server.log_tail()}")
        if comfyui_answers(url):
            return server
        time.sleep(0.5)
    server.stop()
    raise ComfyUIStartError(f"ComfyUI did not answer {url}/system_stats within {timeout:.0f} s; last lines of "
                            f"{log_path}:\n{server.log_tail()}")
