"""Memory traffic and kernel count of one DiT step outside the matrix products, counted on the meta device.

The eager step's time is the matrix products and attention (compute-bound) plus every other kernel: norms, casts,
modulation, RoPE, residual adds. Those are bound by memory bandwidth, so the bytes they read and write predict their
time on any GPU. This script builds the released 14B DiT on the meta device (no memory, no GPU), runs one forward
under a dispatch mode that records every ATen call, and prints one JSON line:

  other_gb          bytes read + written by every call that is not a matrix product or attention (GB, 1e9)
  other_kernels     how many such calls (each is at least one kernel launch on a GPU)
  matmul_gb         bytes in and out of the matrix products (reference: they are compute-bound)
  attention_calls   attention calls (timed as compute)
  est_other_s       other_gb at --bandwidth-tbs (H100 SXM 3.35, H200 4.8 TB/s peak; elementwise kernels reach ~85%)
  top               the ten largest contributors: op name, calls, GB

Bytes are counted per tensor as the distinct elements it spans (a broadcast operand counts once), input and output.
Views, allocations and metadata calls move nothing and are not counted. `F.rms_norm` is counted as the one kernel it
is on CUDA (aten::_fused_rms_norm, PyTorch 2.8 and later), not as the composite the meta device decomposes it into.

  python3 benchmarks/step_traffic.py                        # 832x480x77, bf16
  python3 benchmarks/step_traffic.py --width 1280 --height 720
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import sys
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_animate.model.dit import WanAnimateConfig, WanAnimateDiT  # noqa: E402
from wan_animate.runtime import memory  # noqa: E402

MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "_scaled_mm", "convolution", "_convolution", "linear", "matmul"}
ALLOCATIONS = {"empty", "empty_like", "empty_strided", "new_empty"}
FUSED_ON_CUDA = {F.rms_norm}
GB = 1e9


def distinct_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a tensor spans (dims of stride 0 count once)."""
    elements = math.prod(size for size, stride in zip(t.shape, t.stride()) if stride != 0)
    return elements * t.element_size()


class TrafficCounter(TorchDispatchMode):
    """Sums bytes in and out of every ATen call that is not a view, split into matmul and other."""

    def __init__(self) -> None:
        super().__init__()
        self.other = collections.Counter()  # op -> bytes
        self.calls = collections.Counter()  # op -> calls
        self.matmul_bytes = 0

    def record(self, name: str, args, kwargs, out) -> None:
        tensors = [t for t in tree_flatten((args, kwargs or {}, out))[0] if isinstance(t, torch.Tensor)]
        moved = sum(distinct_bytes(t) for t in tensors)
        if name in MATMUL_OPS:
            self.matmul_bytes += moved
        elif moved and name not in ALLOCATIONS:
            self.other[name] += moved
            self.calls[name] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns):
            self.record(func.overloadpacket.__name__, args, kwargs, out)  # views move no data
        return out


class FusedCalls(TorchFunctionMode):
    """Counts each FUSED_ON_CUDA call as one kernel of its inputs and output, hiding its decomposition."""

    def __init__(self, counter: TrafficCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func not in FUSED_ON_CUDA:
            return func(*args, **(kwargs or {}))
        with _disable_current_modes():
            out = func(*args, **(kwargs or {}))
        self.counter.record(func.__name__, args, kwargs, out)
        return out


def count_attention(counter: list[int]):
    """An attention stand-in: counts the call and returns an empty [B, Lq, H, D] without computing."""
    def fake(q, k, v, backend=None):
        counter.append(1)
        with _disable_current_modes():
            return torch.empty_like(q)
    return fake


def measure(width: int = 832, height: int = 480, frames: int = 77, dtype: torch.dtype = torch.bfloat16,
            config: WanAnimateConfig | None = None) -> dict:
    """Count one forward of the DiT (default: the released 14B) on the meta device; returns the JSON fields above
    (without est_other_s)."""
    meta, config = torch.device("meta"), config or WanAnimateConfig()
    with meta:
        model = WanAnimateDiT(config).to(dtype).eval().requires_grad_(False)
    latent_t, h, w = memory.latent_frame_count(frames), height // 8, width // 8
    inputs = dict(
        x=torch.empty(16, latent_t + 1, h, w, device=meta, dtype=dtype),
        t=torch.tensor([900.0], device=meta),
        context=torch.empty(40, config.text_dim, device=meta, dtype=dtype),
        clip_fea=torch.empty(1, 257, config.clip_dim, device=meta, dtype=dtype),
        y=torch.empty(config.in_dim - 16, latent_t + 1, h, w, device=meta, dtype=dtype),
        pose_latents=torch.empty(config.pose_dim, latent_t, h, w, device=meta, dtype=dtype),
        motion_vec=torch.empty(1, latent_t + 1, config.face_heads + 1, config.dim, device=meta, dtype=dtype),
    )
    attention_calls: list[int] = []
    fake = count_attention(attention_calls)
    counter = TrafficCounter()
    with torch.no_grad(), mock.patch("wan_animate.model.dit_blocks.attention", fake), \
            mock.patch("wan_animate.model.face_adapter.attention", fake), counter, FusedCalls(counter):
        model(**inputs)
    return dict(
        width=width, height=height, frames=frames, dtype=str(dtype).removeprefix("torch."),
        tokens=memory.token_count(frames, height, width),
        other_gb=round(sum(counter.other.values()) / GB, 1),
        other_kernels=sum(counter.calls.values()),
        matmul_gb=round(counter.matmul_bytes / GB, 1),
        attention_calls=len(attention_calls),
        top=[(name, counter.calls[name], round(b / GB, 1)) for name, b in counter.other.most_common(10)],
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--frames", type=int, default=77)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--bandwidth-tbs", type=float, default=4.8 * 0.85, help="effective bandwidth for est_other_s")
    a = p.parse_args(argv)
    result = measure(a.width, a.height, a.frames, getattr(torch, a.dtype))
    result["est_other_s"] = round(result["other_gb"] * GB / (a.bandwidth_tbs * 1e12), 3)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
