"""Turn a CUDA out-of-memory error into one that says which settings to change, with the measured numbers.

    with explain_oom("denoising", settings={"offload_blocks": 10, "fp8": False, "resolution": "1280x720"}):
        run_step()

On torch.cuda.OutOfMemoryError the block's frames are cleared, `free` runs (gc + empty_cache by default; pass e.g.
`offloader.release_all` chained with it), and `VramExhaustedError` (a RuntimeError) is raised from the original.
`explain_oom(...)` also works as a decorator.
"""
from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch

from .devices import release_cached_memory

GIB = 1 << 30
_TRIED = re.compile(r"Tried to allocate ([\d.]+ [KMGT]?i?B)")


class VramExhaustedError(RuntimeError):
    """Out of GPU memory; the message lists the measured numbers and the settings that lower the need."""


def memory_report(device: torch.device | None = None) -> dict[str, float]:
    """GiB figures of a CUDA device: total, free, allocated, reserved, peak allocated; empty without CUDA."""
    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        return {}
    free, total = torch.cuda.mem_get_info(device)
    return {
        "total": total / GIB,
        "free": free / GIB,
        "allocated": torch.cuda.memory_allocated(device) / GIB,
        "reserved": torch.cuda.memory_reserved(device) / GIB,
        "peak allocated": torch.cuda.max_memory_allocated(device) / GIB,
    }


def oom_advice(stage: str, settings: Mapping[str, object]) -> list[str]:
    """Settings to change, most effective first for `stage` ("denoising", "vae encode", "vae decode", ...)."""
    offload = settings.get("offload_blocks")
    offload_hint = (
        f"offload more transformer blocks (offload_blocks is {offload}; raise it by 5-10, or use 'auto')"
        if offload is not None
        else "offload transformer blocks to CPU (offload_blocks, or 'auto')"
    )
    hints = [
        offload_hint,
        "load the diffusion model in fp8 (halves its weight memory)",
        "lower the resolution (tokens grow with width x height)",
        "shorten the segment length (fewer frames per segment; long videos are chained anyway)",
        "decode/encode with the tiled VAE",
    ]
    if "vae" in stage.lower():
        hints.insert(0, hints.pop())
    return hints


def describe_oom(stage: str, error: BaseException, settings: Mapping[str, object], report: Mapping[str, float]) -> str:
    """The message of VramExhaustedError."""
    tried = _TRIED.search(str(error))
    lines = [f"Out of GPU memory during {stage}" + (f" (tried to allocate {tried.group(1)})." if tried else ".")]
    if report:
        lines.append("Measured: " + ", ".join(f"{k} {v:.2f} GiB" for k, v in report.items()) + ".")
    else:
        lines.append("Measured: no CUDA memory statistics available.")
    if settings:
        lines.append("Current settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".")
    lines.append("To fit, change one of these:")
    lines.extend(f"  - {hint}" for hint in oom_advice(stage, settings))
    return "\n".join(lines)


@contextmanager
def explain_oom(
    stage: str,
    settings: Mapping[str, object] | None = None,
    free: Callable[[], None] = release_cached_memory,
    device: torch.device | None = None,
) -> Iterator[None]:
    """Re-raise torch.cuda.OutOfMemoryError inside the block as VramExhaustedError after freeing memory."""
    settings = dict(settings or {})
    try:
        yield
    except torch.cuda.OutOfMemoryError as error:
        report = memory_report(device)  # measured before freeing: this is the state that failed
        message = describe_oom(stage, error, settings, report)
        # the traceback's frames hold the tensors of the failed step; drop their locals so `free` can release them
        traceback.clear_frames(error.__traceback__)
        free()
        raise VramExhaustedError(message) from error
