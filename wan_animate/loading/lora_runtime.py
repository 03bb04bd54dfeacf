"""LoRA on ordinary Linear layers, applied at run time instead of being merged, so that it can be removed or changed
exactly without a copy of the original weights.

The layer's output becomes `x @ W^T + b + sum(factor * (x @ down^T) @ up^T)` for low-rank deltas; dense deltas
(`.diff` of a Linear weight) are added to the weight in float32 at every call: `x @ (W + sum(factor * D))^T`. The
weight itself is never written. Cost per call and layer: two thin matmuls through the rank (rank * (in + out) per
token, 2.5% of the layer's own work at rank 64 for the 14B model's 5120-wide layers); memory: the factors, stored in
the layer's compute dtype (dense deltas in float32). Layers the model evaluates through `runtime.fp8.linear_weight`
(the float32 time embedding and head) get `effective_weight`: all deltas summed into the weight in float32.

Mechanism (`attach_delta` / `detach_delta`, shared with `lora_quantised`): the layer's class is switched to
`LoraLinear` (a subclass of nn.Linear, so `isinstance` checks and `state_dict()` keys keep working) while it holds
deltas, and back when the last one is removed. The factors are non-persistent buffers: `.to()` moves them, block
offloading packs them with their block, and checkpoints never contain them.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoraLinear(nn.Linear):
    """An nn.Linear whose output includes low-rank and dense deltas kept beside its untouched weight."""

    lora_deltas: dict[str, float]  # entry name -> factor (strength * alpha / rank; strength for dense diffs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = any(hasattr(self, f"{entry}_dense") for entry in self.lora_deltas)
        weight = self.effective_weight(self.weight.dtype, low_rank=False) if dense else self.weight
        out = F.linear(x, weight, self.bias)
        for entry, factor in self.lora_deltas.items():
            if hasattr(self, f"{entry}_down"):
                down = getattr(self, f"{entry}_down").to(x.dtype)  # [r, in]
                up = getattr(self, f"{entry}_up").to(x.dtype)  # [out, r]
                out = out + F.linear(F.linear(x, down), up) * factor
        return out

    def effective_weight(self, dtype: torch.dtype, low_rank: bool = True) -> torch.Tensor:
        """W + the deltas (all, or only the dense ones), summed in float32, in `dtype` ([out, in]); what layers
        evaluated through `runtime.fp8.linear_weight` (time embedding, head) use."""
        total = self.weight.float()
        for entry, factor in self.lora_deltas.items():
            if hasattr(self, f"{entry}_dense"):
                total = total + factor * getattr(self, f"{entry}_dense").float()
            elif low_rank:
                up, down = getattr(self, f"{entry}_up").float(), getattr(self, f"{entry}_down").float()
                total = total.addmm(up, down, alpha=factor)
        return total.to(dtype)


def add_linear_delta(
    layer: nn.Linear, entry: str, factor: float, up: torch.Tensor | None = None,
    down: torch.Tensor | None = None, dense: torch.Tensor | None = None,
) -> None:
    """Attach one delta to a Linear layer: low-rank (up [out, r], down [r, in]) or dense ([out, in])."""
    attach_delta(layer, {nn.Linear: LoraLinear}, entry, factor, up, down, dense,
                 factor_dtype=layer.weight.dtype, dense_dtype=torch.float32)


def remove_linear_delta(layer: nn.Linear, entry: str) -> None:
    """Detach one delta; the layer becomes a plain nn.Linear again when none is left."""
    detach_delta(layer, {nn.Linear: LoraLinear}, entry)


def attach_delta(
    layer: nn.Module, lora_classes: dict[type, type], entry: str, factor: float, up: torch.Tensor | None,
    down: torch.Tensor | None, dense: torch.Tensor | None, factor_dtype: torch.dtype | None = None,
    dense_dtype: torch.dtype | None = None,
) -> None:
    """Attach one delta as non-persistent buffers `<entry>_up`/`_down` or `<entry>_dense` on the layer's device,
    switching the layer's class to its delta-carrying subclass (`lora_classes`: plain class -> subclass). Dtypes
    None keep the LoRA file's."""
    if type(layer) in lora_classes:
        layer.__class__ = lora_classes[type(layer)]
        layer.lora_deltas = {}
    elif type(layer) not in lora_classes.values():
        expected = " or ".join(plain.__name__ for plain in lora_classes)
        raise TypeError(f"these LoRA deltas need a {expected} layer; found {type(layer).__name__}")
    if entry in layer.lora_deltas:
        raise ValueError(f"LoRA delta '{entry}' is already attached to this layer")
    device = layer.weight.device
    # detach(): buffers of their own (offloading re-points their data), sharing storage with the parsed LoRA
    if dense is not None:
        layer.register_buffer(f"{entry}_dense", dense.to(device=device, dtype=dense_dtype).detach(), persistent=False)
    else:
        layer.register_buffer(f"{entry}_up", up.to(device=device, dtype=factor_dtype).detach(), persistent=False)
        layer.register_buffer(f"{entry}_down", down.to(device=device, dtype=factor_dtype).detach(), persistent=False)
    layer.lora_deltas[entry] = factor


def detach_delta(layer: nn.Module, lora_classes: dict[type, type], entry: str) -> None:
    """Remove one delta attached by `attach_delta`; the layer gets its plain class back when none is left."""
    plain_classes = {lora_class: plain for plain, lora_class in lora_classes.items()}
    if type(layer) not in plain_classes or entry not in layer.lora_deltas:
        raise ValueError(f"LoRA delta '{entry}' is not attached to this layer")
    del layer.lora_deltas[entry]
    for suffix in ("dense", "up", "down"):
        if hasattr(layer, f"{entry}_{suffix}"):
            delattr(layer, f"{entry}_{suffix}")
    if not layer.lora_deltas:
        del layer.lora_deltas
        layer.__class__ = plain_classes[type(layer)]
