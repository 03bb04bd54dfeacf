"""Run a batch of jobs on several ComfyUI servers, one job at a time per server, with retries and resume folders.

    python -m wan_animate.farm --server http://gpu1:8188 --server http://gpu2:8188 --jobs jobs.json --out results/

jobs.json is a list of jobs (or {"jobs": [...]}, with any job key given once under "defaults"):
    {"name": "clip1", "workflow": "workflows/api/animate.json", "image": "char.png", "video": "drive.mp4",
     "set": {"12.seed": 7}}
`--servers-file` reads server URLs one a line. Each server gets its own thread that takes the next waiting job,
uploads its files, queues it (through wan_animate.client) and downloads the outputs into OUT/<name>/. A server that
cannot be reached or drops out mid-job is retired and its job goes back to the queue for another server; a job the
workflow itself fails (a node error, a rejected prompt) is not retried. Every Wan Animate Sampler of a job gets
`resume_dir` = farm/<name>, so a retried long job continues from its finished segments when the servers share their
output folder (or when it lands on the same server again). OUT/summary.json lists every job with its attempts
(server, seconds, error) and result.
"""
from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .client import (ComfyClient, ComfyUIError, ExecutionFailed, PromptRejected, ServerUnreachable, output_files,
                     parse_assignment, patch_workflow)

SAMPLER = "WanAnimateSampler"
RESUME_ROOT = "farm"
JOB_KEYS = {"name", "workflow", "image", "video", "image_node", "video_node", "set"}


@dataclass
class Job:
    """One job of the batch: a workflow, the files to upload into it and per-job input overrides."""

    name: str
    workflow: str
    image: str | None = None
    video: str | None = None
    image_node: str | None = None
    video_node: str | None = None
    set: dict[str, object] = field(default_factory=dict)


@dataclass
class Attempt:
    server: str
    seconds: float
    error: str | None = None


@dataclass
class JobResult:
    name: str
    status: str = "waiting"  # waiting | done | failed
    server: str | None = None
    seconds: float | None = None
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    attempts: list[Attempt] = field(default_factory=list)


class ServerFailed(Exception):
    """The server went away during a job (the job is retried elsewhere)."""


def load_jobs(path: str | Path) -> list[Job]:
    """Jobs from a JSON file: a list, or {"defaults": {...}, "jobs": [...]}; paths are relative to the file."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    defaults, entries = ({}, data) if isinstance(data, list) else (data.get("defaults", {}), data.get("jobs"))
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of jobs (or {{'jobs': [...]}})")
    jobs = []
    for index, entry in enumerate(entries):
        merged = {**defaults, **entry}
        unknown = set(merged) - JOB_KEYS
        if unknown:
            raise ValueError(f"{path}: job {index} has unknown keys {sorted(unknown)}; expected {sorted(JOB_KEYS)}")
        merged.setdefault("name", f"job{index:03d}")
        if "workflow" not in merged:
            raise ValueError(f"{path}: job {merged['name']!r} names no workflow")
        for key in ("workflow", "image", "video"):
            if merged.get(key):
                merged[key] = str((path.parent / merged[key]).resolve())
        jobs.append(Job(**merged))
    names = [job.name for job in jobs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path}: job names must be unique (they name the output folders); repeated: {duplicates}")
    return jobs


def job_workflow(job: Job, uploads: dict[str, str]) -> dict:
    """The job's API workflow with its uploads and overrides written in and resume_dir set on every sampler."""
    workflow = json.loads(Path(job.workflow).read_text(encoding="utf-8"))
    assignments = [parse_assignment(f"{target}={json.dumps(value)}") for target, value in job.set.items()]
    assignments += [(node_id, "resume_dir", f"{RESUME_ROOT}/{job.name}")
                    for node_id, node in workflow.items() if node.get("class_type") == SAMPLER]
    explicit = {k: v for k, v in (("image", job.image_node), ("video", job.video_node)) if v}
    return patch_workflow(workflow, uploads, explicit, assignments)


def run_on_server(client: ComfyClient, job: Job, out: Path, timeout: float) -> list[str]:
    """Upload, queue, wait and download one job; ServerFailed when the server goes away meanwhile."""
    try:
        client.get_json("/system_stats")
        uploads = {}
        if job.image:
            uploads["image"] = client.upload(Path(job.image), "image")
        if job.video:
            uploads["video"] = client.upload(Path(job.video), "video")
        _, entry = client.run_prompt(job_workflow(job, uploads), timeout=timeout)
        return [str(client.download(ref, out / job.name)) for ref in output_files(entry)]
    except (ServerUnreachable, ConnectionError) as error:
        raise ServerFailed(str(error)) from error


class Farm:
    """Hands the jobs to the servers: one thread per server, each running one job at a time."""

    def __init__(self, servers: list[str], jobs: list[Job], out: Path, max_attempts: int = 3,
                 timeout: float = 6 * 3600.0, http_timeout: float = 60.0):
        if not servers:
            raise ValueError("no server given (--server URL, repeatable, or --servers-file)")
        self.servers = servers
        self.jobs = {job.name: job for job in jobs}
        self.results = {job.name: JobResult(job.name) for job in jobs}
        self.out = Path(out)
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.http_timeout = http_timeout
        self._waiting: queue.Queue[str] = queue.Queue()
        for job in jobs:
            self._waiting.put(job.name)
        self._lock = threading.Lock()
        self._open = len(jobs)  # jobs neither done nor failed
        self._live_servers = len(servers)

    def run(self) -> list[JobResult]:
        threads = [threading.Thread(target=self._serve, args=(url,), name=f"farm {url}") for url in self.servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for result in self.results.values():
            if result.status == "waiting":
                self._finish(result, "failed", error="no server left to run it (every server failed)")
        results = list(self.results.values())
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "summary.json").write_text(json.dumps([asdict(r) for r in results], indent=1), encoding="utf-8")
        return results

    def _serve(self, url: str) -> None:
        client = ComfyClient(url, timeout=self.http_timeout)
        while True:
            with self._lock:
                if self._open == 0:
                    return
            try:
                name = self._waiting.get(timeout=0.2)
            except queue.Empty:
                continue  # a job may come back from a failing server
            result = self.results[name]
            started = time.monotonic()
            try:
                outputs = run_on_server(client, self.jobs[name], self.out, self.timeout)
            except ServerFailed as error:
                self._retire(url, result, started, f"server failed: {error}")
                return
            except (ExecutionFailed, PromptRejected, ComfyUIError, ValueError, FileNotFoundError) as error:
                result.attempts.append(Attempt(url, time.monotonic() - started, str(error)))
                self._finish(result, "failed", server=url, error=str(error))
                continue
            seconds = time.monotonic() - started
            result.attempts.append(Attempt(url, seconds))
            self._finish(result, "done", server=url, seconds=seconds, outputs=outputs)

    def _retire(self, url: str, result: JobResult, started: float, error: str) -> None:
        print(f"farm: {url} failed during {result.name} ({error}); retiring it", file=sys.stderr, flush=True)
        result.attempts.append(Attempt(url, time.monotonic() - started, error))
        with self._lock:
            self._live_servers -= 1
            last_server = self._live_servers == 0
        if len(result.attempts) >= self.max_attempts:
            self._finish(result, "failed", error=f"{len(result.attempts)} attempts failed; last: {error}")
        elif not last_server:
            self._waiting.put(result.name)
        if last_server:
            with self._lock:
                self._open = 0  # nobody left to take the waiting jobs: run() marks them failed

    def _finish(self, result: JobResult, status: str, **fields) -> None:
        with self._lock:
            result.status = status
            for key, value in fields.items():
                setattr(result, key, value)
            self._open = max(0, self._open - 1)
        print(f"farm: {result.name} {status}" + (f" on {result.server}" if result.server else "")
              + (f": {result.error}" if status == "failed" else ""), file=sys.stderr, flush=True)


def read_servers(args: argparse.Namespace) -> list[str]:
    servers = list(args.server)
    if args.servers_file:
        lines = Path(args.servers_file).read_text(encoding="utf-8").splitlines()
        servers += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return list(dict.fromkeys(servers))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wan_animate.farm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", action="append", default=[], help="ComfyUI base URL; repeatable")
    parser.add_argument("--servers-file", help="a file of ComfyUI base URLs, one a line")
    parser.add_argument("--jobs", required=True, help="JSON file of jobs (see the module help)")
    parser.add_argument("--out", default="farm_out", help="folder for the outputs (one subfolder per job) and "
                                                          "summary.json")
    parser.add_argument("--attempts", type=int, default=3, help="servers a job may be tried on")
    parser.add_argument("--timeout", type=float, default=6 * 3600.0, help="seconds to wait for one job")
    parser.add_argument("--http-timeout", type=float, default=60.0, help="seconds for each HTTP request")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        farm = Farm(read_servers(args), load_jobs(args.jobs), Path(args.out), args.attempts, args.timeout,
                    args.http_timeout)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    results = farm.run()
    for result in results:
        print(f"{result.name}: {result.status}" + (f" ({result.server}, {result.seconds:.0f} s)"
                                                   if result.status == "done" else f" ({result.error})"))
    print(Path(args.out) / "summary.json")
    return 0 if all(result.status == "done" for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
