"""Attention dispatch: every attention call of the model goes through `attention`.

Backends:
- "sdpa": PyTorch `scaled_dot_product_attention` (flash / memory-efficient kernels on CUDA, exact maths elsewhere).
- "sage": SageAttention (`pip install sageattention`; INT8 QK, CUDA only). Used when the call qualifies (CUDA tensors,
  fp16/bf16, head_dim 64/96/128, compute capability 8.0+); otherwise the call runs on SDPA and a warning is logged
  once per reason, so a requested backend never changes silently.
- "flash": FlashAttention (`pip install flash-attn`, the `flash_attn_func` of FlashAttention 2; CUDA, fp16/bf16,
  head_dim a multiple of 8 up to 256); otherwise SDPA, with a warning once per reason.
- "auto": on GPUs of compute capability 9.0 and later (Hopper, Blackwell) SDPA, whose flash / cuDNN kernels were
  measured faster there (SageAttention 1.0.6 took 17% longer per 14B step than SDPA on an H200; see
  benchmarks/README.md); elsewhere SageAttention where it qualifies, else FlashAttention where it qualifies, else SDPA.
  The choices are logged at INFO once per reason.

The active backend is one small module-level setting, changed only through `set_attention_backend` or, scoped, with
`attention_backend(name)`; a call may also name its backend explicitly (`attention(q, k, v, backend="sdpa")`).
The model code itself never chooses: the loader node sets the backend the user picked.
Inside torch.compile the choice is evaluated once while tracing (it depends on no tensor value), so the dispatch adds
no graph break to a compiled block.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

BACKENDS = ("sdpa", "sage", "flash", "auto")
SAGE_HEAD_DIMS = (64, 96, 128)
SAGE_DTYPES = (torch.float16, torch.bfloat16)
SAGE_MIN_CAPABILITY = (8, 0)
SAGE_INSTALL_HINT = "`pip install sageattention` into a CUDA build of PyTorch"
FLASH_MAX_HEAD_DIM = 256
FLASH_INSTALL_HINT = "`pip install flash-attn` (a wheel matching this PyTorch and CUDA)"
AUTO_SDPA_FROM_CAPABILITY = (9, 0)  # from here on "auto" keeps SDPA (measured fastest on an H200)

_active_backend = "sdpa"
_reported_fallbacks: set[str] = set()


def set_attention_backend(name: str) -> None:
    """Select the backend used by `attention` calls that do not name one ("sdpa" | "sage" | "flash" | "auto")."""
    global _active_backend
    _active_backend = _checked_backend(name)


def get_attention_backend() -> str:
    """The backend `attention` uses when a call does not name one."""
    return _active_backend


@contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Use backend `name` inside the `with` block, restoring the previous one afterwards."""
    previous = _active_backend
    set_attention_backend(name)
    try:
        yield
    finally:
        set_attention_backend(previous)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Softmax attention with scale 1/sqrt(head_dim) on [B, L, heads, head_dim] tensors.

    q is [B, Lq, H, D], k and v are [B, Lk, H, D]; returns [B, Lq, H, D] in q's dtype. `backend` overrides the active
    backend for this call.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"attention expects q, k, v as [B, L, heads, head_dim]; got shapes {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    name = _checked_backend(backend) if backend is not None else _active_backend
    kernel = "sdpa" if name == "sdpa" else _kernel_for(name, q.device, q.dtype, q.shape[-1], k.dtype, v.dtype)
    if kernel == "sage":
        return _sage(load_sageattn(), q, k, v)
    if kernel == "flash":
        return load_flash_attn()(q, k, v)
    return _sdpa(q, k, v)


@torch.compiler.assume_constant_result
def _kernel_for(requested: str, device: torch.device, dtype: torch.dtype, head_dim: int, k_dtype: torch.dtype,
                v_dtype: torch.dtype) -> str:
    """"sage", "flash" or "sdpa": the kernel that runs a call with these properties under backend `requested`;
    each fallback is logged once per reason.

    Takes no tensor, so torch.compile runs it once at trace time and keeps its answer as a constant."""
    properties = (device, dtype, head_dim, k_dtype, v_dtype)
    if requested == "auto" and auto_keeps_sdpa(device):
        _report_fallback(requested, "PyTorch's own kernels were measured fastest on compute capability "
                         f"{AUTO_SDPA_FROM_CAPABILITY[0]}.{AUTO_SDPA_FROM_CAPABILITY[1]} and later",
                         "SageAttention and FlashAttention not tried")
        return "sdpa"
    if requested in ("sage", "auto"):
        problem = sage_problem(*properties, sage_installed=load_sageattn() is not None)
        if problem is None:
            return "sage"
        _report_fallback(requested, problem, "SageAttention")
    if requested in ("flash", "auto"):
        problem = flash_problem(*properties, flash_installed=load_flash_attn() is not None)
        if problem is None:
            return "flash"
        _report_fallback(requested, problem, "FlashAttention")
    return "sdpa"


def auto_keeps_sdpa(device: torch.device) -> bool:
    """Whether "auto" uses SDPA on `device` without trying SageAttention or FlashAttention (Hopper and later)."""
    return device.type == "cuda" and tuple(torch.cuda.get_device_capability(device)) >= AUTO_SDPA_FROM_CAPABILITY


def sage_problem(device: torch.device, dtype: torch.dtype, head_dim: int, k_dtype: torch.dtype,
                 v_dtype: torch.dtype, sage_installed: bool) -> str | None:
    """Why SageAttention cannot run a call on q of `dtype` / `head_dim` on `device` (k, v of k_dtype, v_dtype), or
    None when it can."""
    if not sage_installed:
        return f"sageattention is not installed; {SAGE_INSTALL_HINT}"
    if device.type != "cuda":
        return f"tensors are on {device.type}, SageAttention needs CUDA"
    capability = torch.cuda.get_device_capability(device)
    return sage_support_problem(capability, dtype, head_dim, k_dtype, v_dtype)


def sage_support_problem(
    capability: tuple[int, int], dtype: torch.dtype, head_dim: int, k_dtype: torch.dtype, v_dtype: torch.dtype
) -> str | None:
    """Why SageAttention does not support this GPU / dtype / head size, or None when it does."""
    if tuple(capability) < SAGE_MIN_CAPABILITY:
        return f"GPU compute capability {capability[0]}.{capability[1]} is below 8.0"
    if dtype not in SAGE_DTYPES or k_dtype != dtype or v_dtype != dtype:
        return f"dtypes q={dtype}, k={k_dtype}, v={v_dtype}; SageAttention needs all float16 or all bfloat16"
    if head_dim not in SAGE_HEAD_DIMS:
        return f"head_dim {head_dim} is not one of {SAGE_HEAD_DIMS}"
    return None


@functools.cache
def load_sageattn() -> Callable[..., torch.Tensor] | None:
    """`sageattention.sageattn`, or None when the package is absent or fails to import (logged once)."""
    try:
        from sageattention import sageattn
    except ImportError as err:
        log.debug("sageattention unavailable: %s", err)
        return None
    return sageattn


def flash_problem(device: torch.device, dtype: torch.dtype, head_dim: int, k_dtype: torch.dtype,
                  v_dtype: torch.dtype, flash_installed: bool) -> str | None:
    """Why FlashAttention cannot run a call on q of `dtype` / `head_dim` on `device`, or None when it can."""
    if not flash_installed:
        return f"flash_attn is not installed; {FLASH_INSTALL_HINT}"
    if device.type != "cuda":
        return f"tensors are on {device.type}, FlashAttention needs CUDA"
    if dtype not in SAGE_DTYPES or k_dtype != dtype or v_dtype != dtype:
        return f"dtypes q={dtype}, k={k_dtype}, v={v_dtype}; FlashAttention needs all float16 or all bfloat16"
    if head_dim % 8 or head_dim > FLASH_MAX_HEAD_DIM:
        return f"head_dim {head_dim} is not a multiple of 8 up to {FLASH_MAX_HEAD_DIM}"
    return None


@functools.cache
def load_flash_attn() -> Callable[..., torch.Tensor] | None:
    """`flash_attn.flash_attn_func` ([B, L, H, D] in and out), or None when the package is absent or fails to import."""
    try:
        from flash_attn import flash_attn_func
    except ImportError as err:
        log.debug("flash_attn unavailable: %s", err)
        return None
    return flash_attn_func


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # SDPA works on [B, H, L, D]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def _sage(sageattn: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # "NHD" is SageAttention's name for [B, L, H, D]; its kernels need a unit stride on head_dim
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


def _checked_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"attention backend {name!r} is unknown; expected one of {BACKENDS}")
    return name


def _report_fallback(requested: str, problem: str, kernel: str) -> None:
    key = f"{requested}: {problem}"
    if key in _reported_fallbacks:
        return
    _reported_fallbacks.add(key)
    level = logging.INFO if requested == "auto" else logging.WARNING
    after = "trying the next backend" if requested == "auto" and kernel == "SageAttention" else "using PyTorch SDPA"
    log.log(level, "attention backend %r: %s (%s); %s for these calls", requested, problem, kernel, after)
