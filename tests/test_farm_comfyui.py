"""The farm against two real ComfyUI servers on 127.0.0.1 running the tiny animate workflow; one server is killed
while it runs a job, which then finishes on the other. Skipped unless COMFYUI_PATH names a ComfyUI checkout."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from comfyui_server import require_comfyui, running_comfyui, write_test_assets
from wan_animate import farm

pytestmark = pytest.mark.comfyui
WORKFLOW = Path(__file__).parent / "workflows_test" / "animate_tiny.json"


def kill_when_running(server, stop: threading.Event) -> None:
    """Kill the server's process as soon as it reports a running prompt."""
    while not stop.is_set():
        try:
            if server.get_json("/queue", timeout=5.0)["queue_running"]:
                server.process.kill()
                return
        except OSError:
            return
        time.sleep(0.1)


def test_farm_finishes_every_job_when_a_server_dies_mid_job(tmp_path):
    comfyui = require_comfyui()
    assets = write_test_assets(tmp_path / "models")
    shared_output = tmp_path / "shared_output"  # both servers keep resume folders in one place
    for name in ("doomed", "healthy"):
        shutil.copytree(assets, tmp_path / name / "assets")
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps({
        "defaults": {"workflow": str(WORKFLOW), "image": str(assets / "input" / "wan_animate_character.png"),
                     "video": str(assets / "input" / "wan_animate_driving.mp4"), "image_node": "4.image",
                     "video_node": "5.file"},
        "jobs": [{"name": "first", "set": {"10.seed": 1}}, {"name": "second", "set": {"10.seed": 2}}],
    }))
    out = tmp_path / "out"
    extra = ("--output-directory", str(shared_output))
    with running_comfyui(comfyui, tmp_path / "doomed", extra) as doomed, \
            running_comfyui(comfyui, tmp_path / "healthy", extra) as healthy:
        stop = threading.Event()
        killer = threading.Thread(target=kill_when_running, args=(doomed, stop), daemon=True)
        killer.start()
        try:
            results = farm.Farm([doomed.url, healthy.url], farm.load_jobs(jobs_file), out, http_timeout=30).run()
        finally:
            stop.set()
    assert doomed.process.poll() is not None, "the doomed server was never seen running a job"
    assert [r.status for r in results] == ["done", "done"], [r.error for r in results]
    assert {r.server for r in results} == {healthy.url}
    (retried,) = [r for r in results if len(r.attempts) == 2]
    assert [a.server for a in retried.attempts] == [doomed.url, healthy.url]
    assert "server failed" in retried.attempts[0].error
    for result in results:
        assert result.outputs and all(Path(p).stat().st_size > 0 for p in result.outputs)
        assert (shared_output / "farm" / result.name).is_dir()  # the sampler's resume folder
    summary = json.loads((out / "summary.json").read_text())
    assert [entry["name"] for entry in summary] == ["first", "second"]
