"""The loop each sequence-parallel worker process runs: load the DiT once, then serve jobs until told to stop.

Started by `DiTWorkers` through torch.multiprocessing (spawn), one process per device, joined in one torch.distributed
process group (NCCL on GPUs, gloo on the CPU). Messages on the worker's command queue:
  ("begin", loras, tokens)  place the model with these LoRAs for forwards of `tokens` tokens per rank (one job);
                            rank 0 answers ("begun", sharded, its weight bytes). The first job decides, the same on every rank, whether
                            the blocks' weights are sharded (FSDP2, weight_sharding.py); a sharded model stays placed
  ("face", face_pixels)     rank 0 only: encode_face; answered ("face", motion_vec)
  ("step", changed, pose_strength, face_strength)
                            one forward with these branch strengths, every rank; rank 0 answers ("step", prediction).
                            `changed` holds only the inputs that differ from the previous step (a tensor, or None
                            for a branch left out); the others are the previous step's (sent once per segment)
  ("end",)                  park the model (end of the job)
  ("stop",)                 leave the group and exit
Each rank answers ("ready", rank, config, weight bytes) once loaded; an error is answered ("error", rank, message,
is_oom) and ends the process (the other ranks may be waiting in a collective: the parent stops them all).
"""
from __future__ import annotations

import os
import queue
import traceback
from contextlib import ExitStack
from dataclasses import replace

import torch
import torch.distributed as dist

from ..loading.model_handle import DiTHandle, DiTOptions
from ..runtime.attention import attention_backend
from ..runtime.devices import free_memory_bytes
from ..runtime.memory import estimate_activation_bytes, module_bytes
from .forward import sequence_parallel_forward
from .weight_sharding import (
    effective_setting,
    has_plain_weights,
    local_weight_bytes,
    shard_blocks,
    should_shard_weights,
)

STEP_INPUTS = ("x", "t", "context", "clip_fea", "y", "pose_latents", "motion_vec")
PARENT_POLL_S = 1.0


def run_worker(
    rank: int,
    devices: list[str],
    backend: str,
    init_file: str,
    path: str,
    options: DiTOptions,
    commands: list,
    results,
) -> None:
    """Entry point of worker `rank` (torch.multiprocessing passes the rank first)."""
    parent = os.getppid()
    device = torch.device(devices[rank])
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:  # CPU workers share the cores instead of each taking them all
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(devices)))
        dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=len(devices))
        base = DiTHandle(path, options)
        model = base.model()
        results.put(("ready", rank, model.config, module_bytes(model)))
        _serve(rank, base, device, commands[rank], results, parent)
    except BaseException as error:
        message = f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=8)}"
        results.put(("error", rank, message, isinstance(error, torch.OutOfMemoryError)))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _serve(rank: int, base: DiTHandle, device: torch.device, commands, results, parent: int) -> None:
    job = ExitStack()
    model = None
    sharded: bool | None = None  # decided by the first job
    last: dict[str, torch.Tensor | None] = {}
    while True:
        try:
            message = commands.get(timeout=PARENT_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:  # the parent process is gone: nobody will send "stop"
                return
            continue
        kind = message[0]
        if kind == "stop":
            job.close()
            return
        if kind == "begin":
            _, loras, tokens = message
            job.close()
            if sharded is None:
                sharded = _decide_sharding(base, device, bool(loras), tokens)
            if sharded:  # the parent refuses LoRAs for a sharded model
                model = base.model()
                job.enter_context(attention_backend(base.options.attention))
            else:
                model = job.enter_context(replace(base, loras=loras).activate(device, tokens))
            last.clear()
            if rank == 0:
                results.put(("begun", sharded, local_weight_bytes(model)))
        elif kind == "face":
            results.put(("face", model.encode_face(message[1].to(device)).cpu()))
        elif kind == "step":
            _, changed, pose_strength, face_strength = message
            for name, value in changed.items():  # kept on the device for the segment's steps
                last[name] = None if value is None else value.to(device, copy=True)
            prediction = sequence_parallel_forward(model, None, *(last[name] for name in STEP_INPUTS),
                                                   pose_strength=pose_strength, face_strength=face_strength)
            if rank == 0:
                results.put(("step", prediction.cpu()))
        elif kind == "end":
            job.close()
            model = None
            last.clear()
        else:
            raise ValueError(f"unknown worker command {kind!r}")


def _decide_sharding(base: DiTHandle, device: torch.device, has_loras: bool, tokens: int) -> bool:
    """Whether to shard (and if so, shard now): the planner's choice on each rank, sharded if any rank needs it so
    that every rank runs the same collectives."""
    model = base.model()
    setting = effective_setting(base.options.shard_weights, has_loras, has_plain_weights(model),
                                base.options.can_shard_weights)
    config = model.config
    activations = estimate_activation_bytes(tokens, config.dim, config.ffn_dim, base.options.dtype)
    free = free_memory_bytes(device) if device.type == "cuda" else None
    wanted = should_shard_weights(setting, device.type, module_bytes(model), activations, free)
    flag = torch.tensor([int(wanted)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item():
        shard_blocks(model, device)
    return bool(flag.item())
