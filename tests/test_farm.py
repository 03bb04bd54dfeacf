"""The multi-server farm against loopback stub ComfyUI servers: one job at a time per server, a server that drops
out mid-job has its job retried elsewhere with the same resume folder, workflow failures are not retried, and the
summary lists every job."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from test_client import WORKFLOW, StubComfyUI
from wan_animate import farm


class DyingStub(StubComfyUI):
    """Accepts a prompt, then goes away while the client waits for it (a server killed mid-job)."""

    def history(self, prompt_id: str) -> dict:
        threading.Thread(target=self._die, daemon=True).start()
        return {}

    def _die(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc):
        self.httpd.server_close()


class CountingStub(StubComfyUI):
    """Records the most prompts queued and not yet finished at once (each finishes at its second /history poll)."""

    def __init__(self):
        super().__init__()
        self.most_at_once = 0
        self._polled: set[str] = set()
        self._finished: set[str] = set()

    def history(self, prompt_id: str) -> dict:
        self.most_at_once = max(self.most_at_once, len(set(self.prompts) - self._finished))
        if prompt_id not in self._polled:
            self._polled.add(prompt_id)
            return {}
        self._finished.add(prompt_id)
        return super().history(prompt_id)


def write_jobs(tmp_path: Path, jobs: list[dict], workflow: dict = WORKFLOW) -> Path:
    (tmp_path / "workflow.json").write_text(json.dumps(workflow))
    (tmp_path / "char.png").write_bytes(b"character")
    (tmp_path / "drive.mp4").write_bytes(b"video")
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps({"defaults": {"workflow": "workflow.json", "image": "char.png", "video": "drive.mp4"},
                                "jobs": jobs}))
    return path


def test_a_server_dying_mid_job_hands_the_job_to_another_with_its_resume_folder(tmp_path, capsys):
    jobs = write_jobs(tmp_path, [{"name": f"clip{i}", "set": {"3.seed": i}} for i in range(3)])
    out = tmp_path / "out"
    with StubComfyUI() as healthy, DyingStub() as dying:
        code = farm.main(["--server", dying.url, "--server", healthy.url, "--jobs", str(jobs), "--out", str(out),
                          "--http-timeout", "5"])
    assert code == 0, capsys.readouterr().err
    summary = {entry["name"]: entry for entry in json.loads((out / "summary.json").read_text())}
    assert {name: entry["status"] for name, entry in summary.items()} == {f"clip{i}": "done" for i in range(3)}
    assert all(entry["server"] == healthy.url for entry in summary.values())
    (retried,) = [entry for entry in summary.values() if len(entry["attempts"]) == 2]
    assert [a["server"] for a in retried["attempts"]] == [dying.url, healthy.url]
    assert "server failed" in retried["attempts"][0]["error"] and retried["attempts"][1]["error"] is None
    (first_try,) = dying.prompts.values()
    on_healthy = {p["3"]["inputs"]["seed"]: p for p in healthy.prompts.values()}
    assert sorted(on_healthy) == [0, 1, 2]
    seed = first_try["3"]["inputs"]["seed"]
    assert first_try["3"]["inputs"]["resume_dir"] == on_healthy[seed]["3"]["inputs"]["resume_dir"] == f"farm/clip{seed}"
    for entry in summary.values():
        assert [Path(p).read_bytes() for p in entry["outputs"]] == [b"\x89PNG fake output"]
        assert Path(entry["outputs"][0]).parent == out / entry["name"]


def test_workflow_failures_are_not_retried_and_a_dead_farm_fails_the_rest(tmp_path):
    boom = {**WORKFLOW, "6": {"class_type": "Boom", "inputs": {}}}
    jobs = farm.load_jobs(write_jobs(tmp_path, [{"name": "bad"}], workflow=boom))
    with StubComfyUI() as server:
        (result,) = farm.Farm([server.url], jobs, tmp_path / "out").run()
    assert result.status == "failed" and len(result.attempts) == 1 and "at least 5 are needed" in result.error

    jobs = farm.load_jobs(write_jobs(tmp_path, [{"name": "a"}, {"name": "b"}]))
    with DyingStub() as dying:
        results = farm.Farm([dying.url], jobs, tmp_path / "out2", http_timeout=5).run()
    assert [r.status for r in results] == ["failed", "failed"]
    assert any("no server left" in r.error for r in results)


def test_each_server_runs_one_job_at_a_time(tmp_path):
    jobs = farm.load_jobs(write_jobs(tmp_path, [{"name": f"j{i}"} for i in range(4)]))
    with CountingStub() as first, CountingStub() as second:
        results = farm.Farm([first.url, second.url], jobs, tmp_path / "out").run()
    assert all(r.status == "done" for r in results)
    assert first.most_at_once == second.most_at_once == 1
    assert len(first.prompts) + len(second.prompts) == 4


def test_job_files_are_checked(tmp_path):
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([{"name": "x", "workflow": "w.json", "seed": 3}]))
    with pytest.raises(ValueError, match=r"unknown keys \['seed'\]"):
        farm.load_jobs(path)
    path.write_text(json.dumps([{"name": "x", "workflow": "w.json"}, {"name": "x", "workflow": "w.json"}]))
    with pytest.raises(ValueError, match="repeated: \\['x'\\]"):
        farm.load_jobs(path)
