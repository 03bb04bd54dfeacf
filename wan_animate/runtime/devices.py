"""Device facts the runtime needs: which devices it runs on, compute dtype, free/total memory, pinned-memory support,
cache release."""
from __future__ import annotations

import ctypes
import functools
import gc
import sys

import torch


SUPPORTED_DEVICE_TYPES = ("cuda", "cpu")  # "cuda" includes ROCm builds of PyTorch


def check_supported_device(device: str | torch.device) -> torch.device:
    """`device` when the pack runs on it (CUDA / ROCm GPUs, or the CPU); a clear error for others (mps, xpu, ...)."""
    device = torch.device(device)
    if device.type not in SUPPORTED_DEVICE_TYPES:
        raise RuntimeError(
            f"ComfyUI computes on '{device}', a {device.type} device, which the Wan Animate nodes do not support: "
            "their memory planning, block offloading, fp8 weights and float64 timestep maths are written for CUDA "
            "(NVIDIA, or AMD with ROCm) and the CPU. Run ComfyUI on a CUDA GPU, or start it with --cpu (very slow)")
    return device


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a torch.device; None picks CUDA when available, else CPU. "cuda" becomes "cuda:<current>"."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def compute_dtype(device: str | torch.device) -> torch.dtype:
    """The DiT's compute dtype: bfloat16 where the device supports it, float16 on older GPUs, float32 on CPU.

    CPU uses float32 because CPU bfloat16 matmuls are slow on most machines and the CPU path is for tests.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if cuda_capability(device) >= (8, 0) else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def cuda_capability(device: str | torch.device) -> tuple[int, int]:
    """Compute capability (major, minor) of a CUDA device."""
    return tuple(torch.cuda.get_device_capability(resolve_device(device)))


def supports_fp8_matmul(device: str | torch.device) -> bool:
    """Whether the device multiplies fp8 natively (Ada / Hopper, capability 8.9+); fp8 *storage* works everywhere."""
    device = torch.device(device)
    return device.type == "cuda" and cuda_capability(device) >= (8, 9)


@functools.cache
def pinned_memory_available() -> bool:
    """Whether page-locked host memory can be allocated (needs a CUDA build with a visible GPU)."""
    if not torch.cuda.is_available():
        return False
    try:
        torch.empty(1, pin_memory=True)
    except RuntimeError:
        return False
    return True


def free_memory_bytes(device: str | torch.device) -> int:
    """Bytes a new allocation on `device` can use: free device memory plus what PyTorch's cache holds unused.

    CPU and other non-CUDA devices report no limit here (the planner is only used for CUDA).
    """
    device = resolve_device(device)
    if device.type != "cuda":
        raise ValueError(f"free_memory_bytes: device {device} is not a CUDA device")
    free, _total = torch.cuda.mem_get_info(device)
    cached_unused = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + cached_unused)


def total_memory_bytes(device: str | torch.device) -> int:
    """Total memory of a CUDA device in bytes."""
    device = resolve_device(device)
    if device.type != "cuda":
        raise ValueError(f"total_memory_bytes: device {device} is not a CUDA device")
    return int(torch.cuda.mem_get_info(device)[1])


def release_cached_memory() -> None:
    """Collect Python garbage, return PyTorch's cached, unused CUDA blocks to the driver and freed host memory to
    the operating system."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    _trim_host_heap()


def _trim_host_heap() -> None:
    """Give the C heap's free pages back (glibc keeps freed allocations under its mmap threshold, up to 32 MB each,
    which is every weight of a smaller model and many of a larger one's, until told otherwise)."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (musl): nothing to trim
        return
    libc.malloc_trim(0)
