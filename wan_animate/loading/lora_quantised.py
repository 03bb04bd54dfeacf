"""LoRA on quantised Linear layers (fp8 and GGUF), kept as an exact float delta instead of being merged into the
quantised weight.

Why not merge: re-quantising W + delta to e4m3 (3 mantissa bits, ~6% relative spacing) rounds most of a LoRA's small
delta away, and a fresh per-tensor scale re-rounds every weight of the layer (measured on the golden DiT with the
official + kohya LoRAs: re-quantising moves the output by 0.086 against the exact merge; this path by 0); GGUF blocks
(4 to 8 bits per weight) would lose even more. Instead the layer keeps the LoRA factors (in the file's dtype, on the
layer's device) and adds `scale * up @ down` in float32, in place, whenever it dequantises its weight. Cost: the
factors (about 0.7 GB for a rank-64 LoRA on every block Linear of the 14B model in bf16, 1.4 GB at rank 128) and one
[out, r] @ [r, in] product per layer and call, well under 1% of the layer's own matmul at video token counts.

Mechanism: the layer's class is switched to `LoraFP8Linear` / `LoraGGUFLinear` (subclasses of `FP8Linear` /
`GGUFLinear`, so every `isinstance` check, `state_dict()` key and offloading hook keeps working) while it holds
deltas, and back when the last one is removed. The factors are non-persistent buffers, so `.to()` moves them and
checkpoints never contain them. Apply LoRAs before setting up block offloading so the factors are packed with their
block; otherwise they are moved to the weight's device at every call.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..runtime.fp8 import FP8Linear
from ..runtime.gguf_linear import GGUFLinear
from .lora_runtime import attach_delta, detach_delta


class _DeltaOnDequantisation:
    """Mixin for a quantised Linear class: adds the attached deltas to the weight it dequantises."""

    lora_deltas: dict[str, float]  # entry name -> factor (strength * alpha / rank; 1 for dense diffs)

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        weight = super().dequantized_weight(torch.float32)  # [out, in]
        if weight.data_ptr() == self.weight.data_ptr():  # a float32 weight comes back as itself: never add in place
            weight = weight.clone()
        for entry, factor in self.lora_deltas.items():
            dense = getattr(self, f"{entry}_dense", None)
            if dense is not None:
                weight.add_(dense.to(device=weight.device, dtype=torch.float32), alpha=factor)
            else:
                up = getattr(self, f"{entry}_up").to(device=weight.device, dtype=torch.float32)  # [out, r]
                down = getattr(self, f"{entry}_down").to(device=weight.device, dtype=torch.float32)  # [r, in]
                weight.addmm_(up, down, alpha=factor)
        return weight.to(dtype)


class LoraFP8Linear(_DeltaOnDequantisation, FP8Linear):
    """An FP8Linear whose effective weight is `weight * scale_weight + sum(factor * up @ down)`."""


class LoraGGUFLinear(_DeltaOnDequantisation, GGUFLinear):
    """A GGUFLinear whose effective weight is `dequantize(weight) + sum(factor * up @ down)`."""


_LORA_CLASSES = {FP8Linear: LoraFP8Linear, GGUFLinear: LoraGGUFLinear}


def add_quantised_delta(
    layer: nn.Module, entry: str, factor: float, up: torch.Tensor | None = None,
    down: torch.Tensor | None = None, dense: torch.Tensor | None = None,
) -> None:
    """Attach one delta to an fp8 or GGUF layer: low-rank (up [out, r], down [r, in]) or dense ([out, in]), kept in
    the LoRA file's dtype."""
    attach_delta(layer, _LORA_CLASSES, entry, factor, up, down, dense)


def remove_quantised_delta(layer: nn.Module, entry: str) -> None:
    """Detach one delta; the layer becomes a plain FP8Linear / GGUFLinear again when none is left."""
    detach_delta(layer, _LORA_CLASSES, entry)
