"""Seconds per denoising step and peak VRAM of our Wan-Animate DiT, with random weights (timing needs no trained ones).

One configuration per run (so the peak is clean); prints one JSON line. Configurations:
  --fp8                   block and face-adapter Linear weights stored in fp8 (e4m3fn, per-tensor scale), as the
                          loader's fp8 option stores them; upcast per layer
  --offload N | auto      offload the last N blocks (auto: planned for the free VRAM, or --vram-budget-gib)
  --attention sdpa|sage|flash|auto
  --compile               torch.compile each block

  python benchmarks/dit_step_bench.py --width 832 --height 480 --frames 77 --steps 3
  python benchmarks/dit_step_bench.py --tiny --device cpu          (smoke run of the script itself)

The step is `WanAnimateDiT.forward` with the face motion tokens precomputed, as the sampler runs it (the motion
encoder runs once per segment; its time is reported separately as `encode_face_s`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_animate.loading.dit import FP8_STORAGE_PREFIXES  # noqa: E402
from wan_animate.model.dit import WanAnimateConfig, WanAnimateDiT  # noqa: E402
from wan_animate.runtime import memory  # noqa: E402
from wan_animate.runtime.attention import attention_backend, load_sageattn  # noqa: E402
from wan_animate.runtime.compile import compile_blocks  # noqa: E402
from wan_animate.runtime.fp8 import FP8Linear, quantize, swap_linears_to_fp8  # noqa: E402
from wan_animate.runtime.offload import enable_block_offload  # noqa: E402

GIB = 1 << 30
TINY = dict(dim=128, ffn_dim=256, num_heads=2, num_layers=5, text_dim=64, clip_dim=32, motion_encoder_dim=32,
            motion_dim=4, motion_channels=(8, 16, 16, 16), face_hidden_dim=32)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--tiny", action="store_true", help="tiny model (dim 128, 5 layers) for a smoke run")
    p.add_argument("--width", type=int, default=None, help="default 832 (64 with --tiny)")
    p.add_argument("--height", type=int, default=None, help="default 480 (64 with --tiny)")
    p.add_argument("--frames", type=int, default=None, help="default 77 (9 with --tiny); 4k+1")
    p.add_argument("--steps", type=int, default=3, help="timed steps, after one warm-up step")
    p.add_argument("--fp8", action="store_true")
    p.add_argument("--offload", default="0", help="blocks to offload: an integer or 'auto'")
    p.add_argument("--prefetch", type=int, default=1)
    p.add_argument("--vram-budget-gib", type=float, default=None,
                   help="plan 'auto' for this much free VRAM instead of the measured free memory")
    p.add_argument("--margin-gib", type=float, default=memory.DEFAULT_MARGIN_BYTES / GIB,
                   help="safety margin of the 'auto' plan")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "sage", "flash", "auto"])
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    a.width = a.width or (64 if a.tiny else 832)
    a.height = a.height or (64 if a.tiny else 480)
    a.frames = a.frames or (9 if a.tiny else 77)
    return a


def build_model(config: WanAnimateConfig, device: torch.device, dtype: torch.dtype, fp8: bool) -> WanAnimateDiT:
    """The DiT on `device` with random N(0, 0.02) weights; with `fp8`, the Linears the loader stores in fp8 (blocks and
    face adapter) hold quantised random weights."""
    with torch.device("meta"):
        model = WanAnimateDiT(config).to(dtype)
        if fp8:
            swap_linears_to_fp8(model, lambda name: name.startswith(FP8_STORAGE_PREFIXES))
    model = model.to_empty(device=device).eval().requires_grad_(False)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
            for name, tensor in own:
                if isinstance(module, FP8Linear) and name == "weight":
                    data, scale = quantize(torch.randn(tensor.shape, generator=g, device=device) * 0.02, tensor.dtype)
                    tensor.copy_(data)
                    module.scale_weight.copy_(scale)
                elif not (isinstance(module, FP8Linear) and name == "scale_weight") and tensor.is_floating_point():
                    tensor.copy_(torch.randn(tensor.shape, generator=g, device=device) * 0.02)
        for module in model.modules():
            if isinstance(module, FP8Linear) and module.bias is not None:
                module.bias.data = module.bias.data.to(dtype)
    return model


def step_inputs(config: WanAnimateConfig, a: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    latent_t, h, w = memory.latent_frame_count(a.frames), a.height // 8, a.width // 8
    frames = latent_t + 1  # the reference latent in front
    return dict(
        x=torch.randn(16, frames, h, w, device=device, dtype=dtype),
        t=torch.tensor([900.0], device=device),
        context=torch.randn(40, config.text_dim, device=device, dtype=dtype),
        clip_fea=torch.randn(1, 257, config.clip_dim, device=device, dtype=dtype),
        y=torch.randn(config.in_dim - 16, frames, h, w, device=device, dtype=dtype),
        pose_latents=torch.randn(config.pose_dim, latent_t, h, w, device=device, dtype=dtype),
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    a = parse_args()
    device, dtype = torch.device(a.device), getattr(torch, a.dtype)
    config = WanAnimateConfig(**TINY) if a.tiny else WanAnimateConfig()
    cuda = device.type == "cuda"
    free_before = torch.cuda.mem_get_info(device)[0] if cuda else None

    model = build_model(config, device, dtype, a.fp8)
    tokens = memory.token_count(a.frames, a.height, a.width)
    sizes = memory.block_bytes(model.blocks)
    other = memory.module_bytes(model) - sum(sizes)
    activations = memory.estimate_activation_bytes(tokens, config.dim, config.ffn_dim, dtype)
    budget = int(a.vram_budget_gib * GIB) if a.vram_budget_gib else free_before
    if a.offload == "auto" and budget is None:
        raise SystemExit("--offload auto needs a CUDA device or --vram-budget-gib")
    offload_count = memory.resolve_offload_count(
        a.offload if a.offload == "auto" else int(a.offload), sizes, budget, activations, other, a.prefetch,
        int(a.margin_gib * GIB),
    )
    offloader = enable_block_offload(model, device, offload_count, a.prefetch) if offload_count else None
    if a.compile:
        compile_blocks(model.blocks)

    inputs = step_inputs(config, a, device, dtype)
    face = torch.rand(1, 3, a.frames, config.face_size, config.face_size, device=device, dtype=dtype) * 2 - 1
    times = []
    with torch.no_grad(), attention_backend(a.attention):
        synchronize(device)
        t0 = time.perf_counter()
        motion_vec = model.encode_face(face)
        synchronize(device)
        encode_face_s = time.perf_counter() - t0
        del face
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        weights_gib = torch.cuda.memory_allocated(device) / GIB if cuda else None
        for step in range(a.steps + 1):
            synchronize(device)
            t0 = time.perf_counter()
            out = model(motion_vec=motion_vec, **inputs)
            synchronize(device)
            if step:  # step 0 is the warm-up (and the compilation with --compile)
                times.append(time.perf_counter() - t0)
            del out
    peak_gib = torch.cuda.max_memory_allocated(device) / GIB if cuda else None
    print(json.dumps(dict(
        impl="ours", s_per_step=round(statistics.median(times), 4), peak_gib=peak_gib and round(peak_gib, 2),
        on_device_before_step_gib=weights_gib and round(weights_gib, 2), encode_face_s=round(encode_face_s, 4),
        tokens=tokens, width=a.width, height=a.height, frames=a.frames, dim=config.dim, layers=config.num_layers,
        dtype=a.dtype, fp8=a.fp8, attention=a.attention, sage_installed=load_sageattn() is not None,
        compile=a.compile, offload=a.offload, offload_blocks=offload_count, prefetch=a.prefetch,
        on_demand_loads=offloader and offloader.stats.on_demand, vram_budget_gib=a.vram_budget_gib,
        margin_gib=a.margin_gib,
        block_gib=round(max(sizes) / GIB, 3), other_weights_gib=round(other / GIB, 3),
        estimated_activation_gib=round(activations / GIB, 2),
        device=torch.cuda.get_device_name(device) if cuda else "cpu",
    )))


if __name__ == "__main__":
    main()
