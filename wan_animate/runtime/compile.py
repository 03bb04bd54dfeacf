"""Optional torch.compile of each transformer block (off by default).

Only each block's `forward` is compiled, not its `__call__`: forward hooks (block offloading) keep running eagerly
around the compiled code, and the module objects in `model.blocks` stay the same, so state dicts, LoRA patching and
offloading see no wrapper. All blocks share one code object, so they share the compiled graph; the first step pays
the compilation.
Triton converts fp8 only on GPUs of compute capability 8.9+ (Ada, Hopper): on older GPUs (A100 sm_80, RTX 30xx sm_86)
blocks holding fp8 weights run uncompiled, with a warning.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from . import devices
from .fp8 import is_fp8

log = logging.getLogger(__name__)
TRITON_FP8_MIN_CAPABILITY = (8, 9)
_warned: set[str] = set()


def fp8_compile_problem(blocks: nn.ModuleList, device: torch.device | str, backend: str = "inductor") -> str | None:
    """Why inductor cannot compile these blocks for `device` (fp8 weights on a GPU whose Triton has no fp8), or None."""
    device = torch.device(device)
    if backend != "inductor" or device.type != "cuda":
        return None
    if not any(is_fp8(p.dtype) for p in blocks.parameters()):
        return None
    capability = tuple(devices.cuda_capability(device))
    if capability >= TRITON_FP8_MIN_CAPABILITY:
        return None
    return (f"the transformer blocks hold fp8 weights and this GPU (compute capability {capability[0]}."
            f"{capability[1]}) has no fp8 in Triton (needs 8.9+: Ada or Hopper)")


def compile_blocks(
    blocks: nn.ModuleList, mode: str | None = None, dynamic: bool | None = False, backend: str = "inductor",
    device: torch.device | str | None = None,
) -> bool:
    """Replace each block's `forward` with a torch.compile'd one; `uncompile_blocks` undoes it. Returns whether it
    did: blocks with fp8 weights for a `device` whose Triton has no fp8 stay uncompiled (a warning says so, once).

    mode: torch.compile mode (None, "default", "reduce-overhead", "max-autotune"); backend: "inductor" on GPU,
    "eager" to check the wiring without a compiler.
    """
    problem = None if device is None else fp8_compile_problem(blocks, device, backend)
    if problem is not None:
        if problem not in _warned:
            _warned.add(problem)
            log.warning("compile is off for this model: %s; the blocks run uncompiled (a bf16 / fp16 model file with "
                        "weight_storage 'default' can be compiled)", problem)
        return False
    for block in blocks:
        if "forward" in vars(block):
            raise RuntimeError(f"block {type(block).__name__} already has an instance forward (compiled twice?)")
        block.forward = torch.compile(block.forward, mode=mode, dynamic=dynamic, backend=backend)
    return True


def uncompile_blocks(blocks: nn.ModuleList) -> None:
    """Restore the class `forward` of every block."""
    for block in blocks:
        vars(block).pop("forward", None)


def is_compiled(block: nn.Module) -> bool:
    """Whether `compile_blocks` replaced this block's forward."""
    return "forward" in vars(block)
