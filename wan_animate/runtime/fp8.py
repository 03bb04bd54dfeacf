"""fp8 weight storage for Linear layers: weights kept in float8 (with an optional per-tensor scale), upcast per layer.

A `FP8Linear` stores `weight` in float8_e4m3fn (or e5m2) and a float32 scalar `scale_weight`; its effective weight is
`weight.float() * scale_weight`, cast to the dtype of the input at every forward. The scale is a non-persistent buffer
so that `state_dict()` keys stay the official ones; `weight_scale(layer)` reads it.

fp8 matrix multiplication (`FP8Linear.fp8_matmul`, off by default): on GPUs with fp8 tensor cores (compute capability
8.9 and later) an e4m3 layer with bf16/fp16 input quantises the input per tensor (dynamic amax) to e4m3 and multiplies
with `torch._scaled_mm`: out = (x_q @ w_q^T) * scale_x * scale_w + bias. Elsewhere it upcasts as without the option.
`emulated_fp8_linear` is the same maths in float32 (for CPU tests and for checking the kernel).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448
FP8_MATMUL_MIN_CAPABILITY = (8, 9)
FP8_MATMUL_INPUT_DTYPES = (torch.bfloat16, torch.float16)
SCALED_MM_MULTIPLE = 16  # _scaled_mm needs in and out features divisible by 16


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype in FP8_DTYPES


class FP8Linear(nn.Linear):
    """nn.Linear whose weight is stored in fp8; computes in the dtype of its input."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 fp8_dtype: torch.dtype = torch.float8_e4m3fn) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device)
        self.weight = nn.Parameter(torch.empty_like(self.weight, dtype=fp8_dtype), requires_grad=False)
        self.register_buffer("scale_weight", torch.ones((), device=device, dtype=torch.float32), persistent=False)
        self.fp8_matmul = False

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The effective weight `weight * scale_weight` in `dtype` ([out, in])."""
        return dequantize(self.weight, self.scale_weight, dtype)

    def set_weight(self, weight: torch.Tensor) -> None:
        """Store a new high-precision weight ([out, in]), re-quantised with a fresh per-tensor scale.

        Used to merge LoRA deltas: read `dequantized_weight(torch.float32)`, add the delta, write it back here.
        """
        if weight.shape != self.weight.shape:
            raise ValueError(f"new weight has shape {tuple(weight.shape)}; expected {tuple(self.weight.shape)}")
        data, scale = quantize(weight, self.weight.dtype)
        self.weight = nn.Parameter(data.to(self.weight.device), requires_grad=False)
        self.scale_weight = scale.to(self.scale_weight.device)

    def _apply(self, fn, recurse: bool = True):
        """Module-wide `.to(dtype)` / `.half()` leave the storage alone: fp8 weight, float32 scale (devices do move)."""
        storage, scale = self.weight.dtype, self.scale_weight
        super()._apply(fn, recurse)
        if is_fp8(storage) and self.weight.dtype != storage:
            self.weight.data = self.weight.data.to(storage)  # exact: fp8 values are representable in wider floats
        moved = self.scale_weight
        self.scale_weight = moved.float() if scale.is_meta else scale.to(moved.device)  # meta: to_empty's fresh buffer
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.fp8_matmul and fp8_matmul_usable(x, self.weight):
            return scaled_mm_linear(x, self.weight, self.scale_weight, bias)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)


def quantize_activation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor dynamic e4m3 quantisation of an activation: (x / scale in e4m3, scale), scale = amax / 448.

    Three passes over x: the max |x| (read in x's dtype), the float32 quotient (x is converted inside the kernel) and
    the e4m3 cast. |x / scale| is at most 448 up to float32 rounding, which the cast rounds to 448, so no clamp pass
    is needed.
    """
    amax = torch.linalg.vector_norm(x, float("inf")).float()
    scale = amax.clamp(min=1e-12) / E4M3_MAX
    quotient = x / scale.reshape(1)  # a 1-element tensor takes part in type promotion (a 0-dim one would not): float32
    return quotient.to(torch.float8_e4m3fn), scale


def emulated_fp8_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                        bias: torch.Tensor | None) -> torch.Tensor:
    """The maths of `scaled_mm_linear` in float32 on any device: x [..., in], fp8 weight [out, in] -> [..., out] in
    x's dtype."""
    x_q, x_scale = quantize_activation(x)
    out = (x_q.float() @ weight.float().t()) * (x_scale * weight_scale.float())
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


def scaled_mm_linear(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                     bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., in] (bf16/fp16, CUDA) times an e4m3 weight [out, in] on fp8 tensor cores -> [..., out] in x's dtype."""
    rows = x.reshape(-1, x.shape[-1])  # [tokens, in]
    x_q, x_scale = quantize_activation(rows)
    out = torch._scaled_mm(x_q, weight.t(), scale_a=x_scale, scale_b=weight_scale.float(), bias=bias,
                           out_dtype=x.dtype)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def fp8_matmul_usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when `scaled_mm_linear` can run: CUDA with fp8 tensor cores, bf16/fp16 input, e4m3 weight, sizes % 16."""
    return (x.device.type == "cuda" and x.dtype in FP8_MATMUL_INPUT_DTYPES and weight.dtype == torch.float8_e4m3fn
            and weight.shape[0] % SCALED_MM_MULTIPLE == 0 and weight.shape[1] % SCALED_MM_MULTIPLE == 0
            and device_has_fp8_matmul(x.device))


@functools.cache
def device_has_fp8_matmul(device: torch.device) -> bool:
    """Whether `device` has fp8 tensor cores (CUDA compute capability 8.9 or later) and torch has `_scaled_mm`."""
    if device.type != "cuda" or not hasattr(torch, "_scaled_mm"):
        return False
    return torch.cuda.get_device_capability(device) >= FP8_MATMUL_MIN_CAPABILITY


def set_fp8_matmul(root: nn.Module, enabled: bool) -> int:
    """Turn fp8 matrix multiplication on or off for every FP8Linear of `root`; returns how many layers it covers."""
    layers = [m for m in root.modules() if isinstance(m, FP8Linear)]
    for layer in layers:
        layer.fp8_matmul = enabled
    return len(layers)


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """fp8 `weight` times its per-tensor `scale` (None: 1) in `dtype`; the product is formed in float32."""
    if scale is None:
        return weight.to(dtype)
    return (weight.float() * scale.float()).to(dtype)


def quantize(weight: torch.Tensor, fp8_dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled fp8: returns (weight / scale in fp8, scale) with scale = max|weight| / fp8 max."""
    w = weight.float()
    amax = w.abs().max().clamp(min=1e-12)
    scale = amax / torch.finfo(fp8_dtype).max
    return (w / scale).to(fp8_dtype), scale.to(torch.float32)


def linear_weight(layer: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """A Linear layer's effective weight in `dtype`: dequantised when the layer stores it quantised (fp8, GGUF), with
    its run-time LoRA deltas when it carries them (a layer with an `effective_weight(dtype)` method)."""
    effective = getattr(layer, "effective_weight", None)
    if effective is not None:
        return effective(dtype)
    if hasattr(layer, "dequantized_weight"):
        return layer.dequantized_weight(dtype)
    return layer.weight.to(dtype)


def weight_scale(layer: nn.Module) -> torch.Tensor | None:
    """The per-tensor scale of an FP8Linear, None for other layers."""
    return layer.scale_weight if isinstance(layer, FP8Linear) else None


def swap_linears_to_fp8(
    root: nn.Module, select: Callable[[str], bool], fp8_dtype: torch.dtype = torch.float8_e4m3fn
) -> list[str]:
    """Replace every nn.Linear of `root` whose qualified name passes `select` by an FP8Linear (weights not copied).

    Meant for a model built on the meta device before its weights are assigned; returns the replaced names.
    """
    replaced = []
    for name, module in list(root.named_modules()):
        if type(module) is not nn.Linear or not select(name):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        fp8 = FP8Linear(module.in_features, module.out_features, module.bias is not None,
                        device=module.weight.device, fp8_dtype=fp8_dtype)
        setattr(parent, child, fp8)
        replaced.append(name)
    return replaced
