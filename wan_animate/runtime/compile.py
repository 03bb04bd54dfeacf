"""Optional torch.compile of each transformer block (off by default).

Only each block's `forward` is compiled, not its `__call__`: forward hooks (block offloading) keep running eagerly
around the compiled code, and the module objects in `model.blocks` stay the same, so state dicts, LoRA patching and
offloading see no wrapper. All blocks share one code object, so they share the compiled graph; the first step pays
the compilation.
"""
from __future__ import annotations

import torch
from torch import nn


def compile_blocks(
    blocks: nn.ModuleList, mode: str | None = None, dynamic: bool | None = False, backend: str = "inductor"
) -> None:
    """Replace each block's `forward` with a torch.compile'd one; `uncompile_blocks` undoes it.

    mode: torch.compile mode (None, "default", "reduce-overhead", "max-autotune"); backend: "inductor" on GPU,
    "eager" to check the wiring without a compiler.
    """
    for block in blocks:
        if "forward" in vars(block):
            raise RuntimeError(f"block {type(block).__name__} already has an instance forward (compiled twice?)")
        block.forward = torch.compile(block.forward, mode=mode, dynamic=dynamic, backend=backend)


def uncompile_blocks(blocks: nn.ModuleList) -> None:
    """Restore the class `forward` of every block."""
    for block in blocks:
        vars(block).pop("forward", None)


def is_compiled(block: nn.Module) -> bool:
    """Whether `compile_blocks` replaced this block's forward."""
    return "forward" in vars(block)
