"""Linear layers whose weight stays GGUF-quantised in memory (host and GPU) and is dequantised at every use.

`GGUFLinear.weight` is a uint8 buffer of the raw blocks, one row of blocks per output feature ([out, row bytes]);
the forward dequantises it on the weight's device (gguf_dequant.py) to the input's dtype. Module-wide `.to(dtype)`
leaves the uint8 buffer alone, `.to(device)` and block offloading move the quantised bytes, and the memory planner
counts them as they are.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gguf_dequant import dequantize, quant_type, row_bytes


class GGUFLinear(nn.Module):
    """y = x W^T + b with W kept as raw ggml blocks of type id `qtype`."""

    def __init__(self, in_features: int, out_features: int, qtype: int, bias: bool = True, device=None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.qtype = in_features, out_features, qtype
        self.register_buffer(
            "weight", torch.empty(out_features, row_bytes(qtype, in_features), dtype=torch.uint8, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device), requires_grad=False) if bias else None

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight [out, in] in `dtype`, dequantised on the device the raw blocks are on."""
        return dequantize(self.weight, self.qtype, (self.out_features, self.in_features)).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"quant={quant_type(self.qtype).name}, bias={self.bias is not None}")


def swap_linears_to_gguf(root: nn.Module, qtypes: dict[str, int]) -> None:
    """Replace the nn.Linear layers named in `qtypes` (qualified name -> ggml type id) by GGUFLinear layers.

    Meant for a model built on the meta device before its weights are assigned.
    """
    for name, qtype in qtypes.items():
        module = root.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        layer = GGUFLinear(module.in_features, module.out_features, qtype, module.bias is not None,
                           device=module.weight.device)
        setattr(parent, child, layer)
