"""Sequence-parallel DiT workers as seen from the sampling process.

`DiTWorkers` starts one worker process per device with torch.multiprocessing (spawn) and supervises them: a worker
that raises (OOM included) or dies fails the current call with a message naming its rank and device, every worker is
stopped, and the next `shared_workers` call starts fresh ones. The workers load the weights once and stay up between
jobs. `session` opens one job and yields a `WorkerDiT`, a stand-in for the model that `generate` can call like the
in-process DiT (the denoising loop, the VAE and the interrupt check stay in the calling process, so an interrupt stops
every worker after the step in flight).
"""
from __future__ import annotations

import atexit
import logging
import math
import os
import queue
import sys
import tempfile
import time
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.multiprocessing as mp

from ..loading.model_handle import DiTHandle, DiTOptions
from ..model.dit import WanAnimateConfig
from .worker import STEP_INPUTS, run_worker

log = logging.getLogger(__name__)
POLL_S = 0.2
ERROR_GRACE_S = 1.0
STOP_WAIT_S = 10.0


class WorkerFailure(RuntimeError):
    """A sequence-parallel worker raised or died; the workers were stopped."""


def worker_devices(gpus: int, device: torch.device | str) -> list[str]:
    """One device per worker: cuda:0 .. cuda:gpus-1 when sampling on CUDA, else `gpus` CPU processes (gloo)."""
    device = torch.device(device)
    if gpus < 1:
        raise ValueError(f"gpus is {gpus}; expected at least 1")
    if device.type == "cpu":
        return ["cpu"] * gpus
    if device.type != "cuda":
        raise ValueError(f"gpus > 1 needs CUDA GPUs (NCCL) or the CPU (gloo); the sampling device is {device}")
    visible = torch.cuda.device_count()
    if gpus > visible:
        raise ValueError(f"gpus is {gpus} but {visible} CUDA GPU(s) are visible (CUDA_VISIBLE_DEVICES?)")
    return [f"cuda:{index}" for index in range(gpus)]


class DiTWorkers:
    """One DiT file served by len(devices) worker processes forming one torch.distributed group."""

    def __init__(self, path: str, options: DiTOptions, devices: Sequence[str]):
        self.path = path
        self.options = options
        self.devices = list(devices)
        backend = "nccl" if all(d.startswith("cuda") for d in self.devices) else "gloo"
        context = mp.get_context("spawn")
        self._folder = tempfile.TemporaryDirectory(prefix="wan_animate_workers_")
        self._commands = [context.Queue() for _ in self.devices]
        self._results = context.Queue()
        self._failed = False
        with _bare_main_module():
            self._processes = mp.start_processes(
                run_worker,
                args=(self.devices, backend, os.path.join(self._folder.name, "rendezvous"), path, options,
                      self._commands, self._results),
                nprocs=len(self.devices), join=False, start_method="spawn",
            )
        ready = [self._receive("ready") for _ in self.devices]
        self.config: WanAnimateConfig = ready[0][1]
        self.model_bytes: int = ready[0][2]  # weights of the whole model
        self.sharded: bool | None = None  # whether the blocks' weights are sharded (FSDP2); decided by the first job
        self.rank_weight_bytes: int | None = None  # weights rank 0 holds in the current job (its slices when sharded)

    @property
    def world_size(self) -> int:
        return len(self.devices)

    @property
    def alive(self) -> bool:
        return not self._failed and all(process.is_alive() for process in self._processes.processes)

    @contextmanager
    def session(self, loras: tuple, tokens: int, device: torch.device | str) -> Iterator["WorkerDiT"]:
        """One job: the workers place the model with `loras` for forwards of `tokens` tokens (split over them)."""
        if loras and (self.options.shard_weights == "on" or self.sharded):
            raise ValueError("LoRAs cannot be applied to weights sharded over the GPUs (the Model Loader's "
                             f"shard_weights is {self.options.shard_weights!r}); remove the LoRAs or set "
                             "shard_weights to 'off'")
        self._send_all(("begin", tuple(loras), math.ceil(tokens / self.world_size)))
        self.sharded, self.rank_weight_bytes = self._receive("begun")
        try:
            yield WorkerDiT(self, torch.device(device))
        finally:
            if self.alive:
                self._send_all(("end",))

    def shutdown(self) -> None:
        """Stop every worker (asked first, then terminated) and forget the group."""
        if self.alive:
            self._send_all(("stop",))
            self._wait_exit(STOP_WAIT_S)
        for process in self._processes.processes:
            if process.is_alive():
                process.terminate()
        self._wait_exit(STOP_WAIT_S)
        self._failed = True
        self._folder.cleanup()

    # ----- messages -----

    def _send_all(self, message: tuple) -> None:
        for commands in self._commands:
            commands.put(message)

    def _request(self, rank: int, message: tuple, kind: str) -> object:
        self._commands[rank].put(message)
        return self._receive(kind)[0]

    def _receive(self, kind: str) -> tuple:
        """The payload of the next message (which must be of `kind`), watching the workers while waiting."""
        while True:
            try:
                message = self._results.get(timeout=POLL_S)
            except queue.Empty:
                self._check_processes()
                continue
            if message[0] == "error":
                self._raise_failure(message)
            if message[0] != kind:
                self._fail()
                raise WorkerFailure(f"expected a {kind!r} answer from the workers, got {message[0]!r}; {_NEXT_RUN}")
            return message[1:]

    def _raise_failure(self, first: tuple) -> None:
        """Raise the root cause of a failure: an out-of-memory error, else a worker that died without a word (the
        others then fail in their collectives), else the first error reported."""
        errors = {first[1]: first[2:]}
        deadline = time.monotonic() + ERROR_GRACE_S  # the other ranks' reports, if any, arrive meanwhile
        while time.monotonic() < deadline:
            try:
                message = self._results.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if message[0] == "error":
                errors.setdefault(message[1], message[2:])
        dead = [rank for rank, process in enumerate(self._processes.processes) if not process.is_alive()]
        while True:  # what the dead sent before exiting is in the pipe by now
            try:
                message = self._results.get(timeout=POLL_S)
            except queue.Empty:
                break
            if message[0] == "error":
                errors.setdefault(message[1], message[2:])
        silent_deaths = [rank for rank in dead if rank not in errors]
        codes = [self._processes.processes[rank].exitcode for rank in silent_deaths]
        self._fail()
        for rank, (text, is_oom) in sorted(errors.items()):
            if is_oom:
                raise torch.OutOfMemoryError(f"worker {rank} ({self.devices[rank]}) ran out of memory: "
                                             f"{text.strip()}\n{_NEXT_RUN}")
        if silent_deaths:
            raise WorkerFailure(self._death(silent_deaths[0], codes[0]))
        rank, (text, _) = first[1], first[2:]
        raise WorkerFailure(f"worker {rank} ({self.devices[rank]}) failed: {text.strip()}\n{_NEXT_RUN}")

    def _death(self, rank: int, code: int | None) -> str:
        return (f"worker {rank} ({self.devices[rank]}) died (exit code {code}; killed, or out of host memory?); "
                f"{_NEXT_RUN}")

    def _check_processes(self) -> None:
        dead = [rank for rank, process in enumerate(self._processes.processes) if not process.is_alive()]
        if not dead:
            return
        try:  # a worker that raised reported why before exiting
            message = self._results.get(timeout=ERROR_GRACE_S)
        except queue.Empty:
            message = None
        if message is not None and message[0] == "error":
            self._raise_failure(message)
        code = self._processes.processes[dead[0]].exitcode
        self._fail()
        raise WorkerFailure(self._death(dead[0], code))

    def _fail(self) -> None:
        log.error("stopping the %d sequence-parallel workers after a failure", self.world_size)
        for process in self._processes.processes:
            if process.is_alive():
                process.terminate()
        self._wait_exit(STOP_WAIT_S)
        self._failed = True

    def _wait_exit(self, timeout: float) -> None:
        for process in self._processes.processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(timeout)


_NEXT_RUN = "the workers were stopped; the next run starts fresh ones"


@contextmanager
def _bare_main_module() -> Iterator[None]:
    """Hide the host program's __main__ while workers start: spawn would re-run it in every worker (for ComfyUI,
    main.py's start-up: custom-node prestartup scripts, CUDA initialised on GPU 0), and the workers need none of it."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class WorkerDiT:
    """The DiT as `generate` calls it, computed by the workers; tensors come back on `device`.

    Inputs other than x and t usually stay the same for a whole segment: a tensor that is the same object as in the
    previous step is not sent again.
    """

    def __init__(self, workers: DiTWorkers, device: torch.device):
        self.workers = workers
        self.config = workers.config
        self.device = device
        self._last: dict[str, torch.Tensor | None] = {}

    def encode_face(self, face_pixels: torch.Tensor) -> torch.Tensor:
        motion_vec = self.workers._request(0, ("face", face_pixels.detach().cpu()), "face")
        return motion_vec.to(self.device)

    def __call__(self, *inputs: torch.Tensor | None, pose_strength: float = 1.0,
                 face_strength: float = 1.0) -> torch.Tensor:
        """One prediction, as `WanAnimateDiT.forward` with the same inputs and branch strengths."""
        changed = {}  # only the inputs that are not the same object as in the previous step; None stays None
        for name, value in zip(STEP_INPUTS, inputs, strict=True):
            if name not in self._last or self._last[name] is not value:
                changed[name] = None if value is None else value.detach().cpu()
                self._last[name] = value
        self.workers._send_all(("step", changed, float(pose_strength), float(face_strength)))
        return self.workers._receive("step")[0].to(self.device)


_shared: dict[tuple, DiTWorkers] = {}


def shared_workers(path: str, options: DiTOptions, devices: Sequence[str]) -> DiTWorkers:
    """The running workers for this file, options and devices; started (stopping any others) when there are none or
    they failed."""
    key = (path, options, tuple(devices))
    workers = _shared.get(key)
    if workers is not None and workers.alive:
        return workers
    for other in list(_shared):
        _shared.pop(other).shutdown()
    workers = _shared[key] = DiTWorkers(path, options, devices)
    return workers


def workers_for(handle: DiTHandle, device: torch.device | str) -> DiTWorkers:
    """The shared workers serving `handle`'s file and options on `handle.options.gpus` devices like `device`."""
    return shared_workers(handle.path, handle.options, worker_devices(handle.options.gpus, device))


@atexit.register
def shutdown_all() -> None:
    """Stop every worker group this process started."""
    for key in list(_shared):
        _shared.pop(key).shutdown()
