"""`python3 -m wan_animate.run` end to end against a real ComfyUI with the tiny models: from the ComfyUI folder (with
a --base-directory of its own, so the shared checkout is not touched) it links the pack, starts ComfyUI, downloads the
models the workflow declares from a loopback file server, runs the tiny animate workflow on the user's image and
video, writes an mp4 and stops the server. Skipped unless COMFYUI_PATH names a ComfyUI checkout."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import stat
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from comfyui_server import free_port, require_comfyui, write_test_assets
from file_server import FileServer, Served
from tiny_models import FILES, VIDEO_FRAMES, VIDEO_SIZE, write_video
from wan_animate import run
from wan_animate.workflow_files import REPO_ROOT

pytestmark = pytest.mark.comfyui
LAUNCHER = REPO_ROOT / "tests" / "comfyui_launcher.py"
TINY_MODELS = {"dit": ("diffusion_models", 1), "vae": ("vae", 2), "detector": ("detection", 3),
               "pose": ("detection", 3)}  # key -> (models/ folder, node id in the UI twin)


def _launcher_python(folder: Path) -> Path:
    """A --python for a CPU-torch ComfyUI (docs/COMFYUI_TESTING.md): runs `main.py ARGS` through the launcher."""
    wrapper = folder / "python_via_launcher"
    wrapper.write_text(f'#!/bin/sh\nshift  # "main.py": the launcher runs it\n'
                       f'exec "{sys.executable}" -u "{LAUNCHER}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def _workflow_with_declared_models(folder: Path, files_url: str) -> Path:
    """The tiny animate workflow as API file plus a UI twin that declares its model files with download URLs."""
    (folder / "api").mkdir(parents=True)
    api = folder / "api" / "animate_tiny.json"
    shutil.copy(REPO_ROOT / "tests" / "workflows_test" / "animate_tiny.json", api)
    nodes = {}
    for key, (directory, node_id) in TINY_MODELS.items():
        nodes.setdefault(node_id, []).append({"name": FILES[key], "directory": directory,
                                              "url": f"{files_url}/resolve/{FILES[key]}"})
    ui = {"nodes": [{"id": node_id, "properties": {"models": models}} for node_id, models in nodes.items()]}
    (folder / "animate_tiny.json").write_text(json.dumps(ui))
    return api


def test_one_command_downloads_the_models_and_writes_the_video(tmp_path, capsys):
    comfyui = require_comfyui()
    custom_nodes_before = sorted(p.name for p in (comfyui / "custom_nodes").iterdir())
    assets = write_test_assets(tmp_path / "work")
    base = tmp_path / "base"
    (base / "input").mkdir(parents=True)
    shutil.copy(assets / "input" / FILES["embeds"], base / "input")  # Load Embeddings reads ComfyUI's input/
    out = tmp_path / "results"
    port = free_port()
    with FileServer() as files:
        for key, (directory, _) in TINY_MODELS.items():
            data = (assets / "models" / directory / FILES[key]).read_bytes()
            sha256 = hashlib.sha256(data).hexdigest()
            files.files[f"/resolve/{FILES[key]}"] = Served(  # as Hugging Face: 302 with the LFS sha256
                b"", redirect_to=f"/cdn/{FILES[key]}", headers={"X-Linked-ETag": f'"{sha256}"'})
            files.files[f"/cdn/{FILES[key]}"] = Served(data)
        code = run.main([
            "--comfyui", str(comfyui), "--port", str(port), "--python", str(_launcher_python(tmp_path)),
            f"--comfyui-args=--base-directory {base} --cpu --disable-auto-launch --database-url sqlite:///:memory:",
            "--workflow", str(_workflow_with_declared_models(tmp_path / "wf", files.url)), "--download",
            "--image", str(assets / "input" / FILES["character"]), "--video", str(assets / "input" / FILES["video"]),
            "--out", str(out),
        ])
    captured = capsys.readouterr()
    log = out / "wan_animate_comfyui.log"
    assert code == 0, captured.err + "\n" + (log.read_text(errors="replace")[-3000:] if log.exists() else "")
    for key, (directory, _) in TINY_MODELS.items():
        downloaded = base / "models" / directory / FILES[key]
        assert downloaded.read_bytes() == (assets / "models" / directory / FILES[key]).read_bytes()
    (video_path,) = [Path(line) for line in captured.out.splitlines()]
    assert video_path.is_relative_to(out) and video_path.suffix == ".mp4"
    with av.open(str(video_path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) > 1 and frames[0].shape[:2] == (64, 64)
    assert (base / "custom_nodes" / "comfyui-wan-animate").resolve() == REPO_ROOT
    assert sorted(p.name for p in (comfyui / "custom_nodes").iterdir()) == custom_nodes_before
    assert "running " in captured.err and "stopping the ComfyUI this command started" in captured.err
    assert run.comfyui_answers(f"http://127.0.0.1:{port}") is None


def test_no_person_found_is_reported_with_comfyuis_message(comfyui, tmp_path, capsys):
    """Against a running ComfyUI (given by URL): a driving video without a person stops the job with the node's
    message (the tiny detector finds a person only where red or green is over 0.5)."""
    empty_room = tmp_path / "empty_room.mp4"
    write_video(empty_room, np.full((VIDEO_FRAMES, *VIDEO_SIZE, 3), 30, np.uint8))
    code = run.main(["--comfyui", comfyui.url, "--workflow", str(REPO_ROOT / "tests" / "workflows_test" /
                                                                 "animate_tiny.json"),
                     "--image", str(comfyui.input_dir / FILES["character"]), "--video", str(empty_room),
                     "--out", str(tmp_path / "results"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert re.match(r"error: ComfyUI failed while running node 7 \[WanAnimatePreprocess\]: ValueError: no person "
                    r"was detected in any of the \d+ frames of the driving video", err), err  # frames: after resampling
    assert "Traceback" not in err
