"""Benchmark the Wan2.1 VAE: encode + decode time and peak GPU memory, tiled and untiled.

Random weights at the released configuration (dim 96, z_dim 16) unless --weights names a real checkpoint; the timing
and memory of a VAE do not depend on the weight values.

    python benchmarks/vae_bench.py                                   # 81 frames at 832x480 and 1280x720, bf16, GPU
    python benchmarks/vae_bench.py --dtype fp32 --sizes 1280x720 --modes tiled --tile 48 --json out.json
    python benchmarks/vae_bench.py --tiny                            # CPU smoke check: tiny model, tiny video

Peak memory is `torch.cuda.max_memory_allocated` over each call (reset before it), with the input video (float32)
and the outputs on the GPU; it is not reported on CPU. --memory-cap-gib limits the process's GPU memory to check
what fits a smaller card.

Recorded 2026-11-26 on one NVIDIA H200 (torch 2.11.0+cu130), random weights, dim 96, 81 frames, tile 64 / overlap 8
latent cells unless noted; seconds, peak GiB:

    bf16  `--dtype bf16 --repeat 2` (best of 2)
      832x480   untiled  encode 0.94 s 4.42 GiB   decode 1.46 s 4.85 GiB
      832x480   tiled    encode 1.17 s 2.97 GiB   decode 1.82 s 3.46 GiB
      1280x720  untiled  encode 2.24 s 9.83 GiB   decode 3.42 s 10.83 GiB
      1280x720  tiled    encode 3.72 s 3.61 GiB   decode 5.79 s 4.14 GiB
      1280x720  tiled, `--sizes 1280x720 --modes tiled --tile 32`: encode 5.04 s 1.75 GiB, decode 7.60 s 1.90 GiB
    fp32  `--dtype fp32` (one run; cuDNN's default TF32 convolutions)
      832x480   untiled  encode 1.54 s 8.42 GiB   decode 2.49 s 9.29 GiB
      832x480   tiled    encode 1.92 s 5.53 GiB   decode 3.08 s 6.29 GiB
      1280x720  untiled  encode 3.65 s 18.73 GiB  decode 5.87 s 20.74 GiB
      1280x720  tiled    encode 5.98 s 6.32 GiB   decode 9.67 s 7.14 GiB
    12 GiB card  `--sizes 1280x720 --memory-cap-gib 12 --dtype bf16|fp32`
      untiled decode runs out of memory in bf16 and fp32 (bf16 untiled encode passes, 7.1 s);
      tiled passes: bf16 decode 5.81 s 4.14 GiB, fp32 decode 9.77 s 7.14 GiB.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_animate.loading.vae import load_vae
from wan_animate.model.vae import DEFAULT_OVERLAP, DEFAULT_TILE, VAEConfig, WanVAE

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TINY_CONFIG = VAEConfig(dim=8, num_res_blocks=1, dim_mult=(1, 2, 2, 2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="default: cuda, or the CPU with --tiny when there is no CUDA")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--frames", type=int, default=81, help="video frames, 4k+1")
    parser.add_argument("--sizes", default="832x480,1280x720", help="comma-separated WIDTHxHEIGHT")
    parser.add_argument("--modes", default="untiled,tiled", help="comma-separated: untiled, tiled")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help="tile size in latent cells (8 px)")
    parser.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="tile overlap in latent cells")
    parser.add_argument("--weights", help="a Wan2.1 VAE checkpoint to load instead of random weights")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per case (the best is reported)")
    parser.add_argument("--tiny", action="store_true", help="tiny model, 5 frames at 64x48 (CPU smoke check)")
    parser.add_argument("--memory-cap-gib", type=float,
                        help="cap this process's GPU memory (simulates a smaller card; cuDNN then picks leaner kernels)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() or not args.tiny else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("vae_bench: CUDA is not available here; run it on a GPU, or --tiny for a CPU smoke check")
    if args.tiny:
        args.frames, args.sizes = 5, "64x48"
        args.tile, args.overlap = min(args.tile, 4), min(args.overlap, 2)
    return args


def build_vae(args: argparse.Namespace) -> WanVAE:
    dtype = DTYPES[args.dtype]
    if args.weights:
        return load_vae(args.weights, device=args.device, dtype=dtype)
    torch.manual_seed(0)
    with torch.device(args.device):
        vae = WanVAE(TINY_CONFIG if args.tiny else VAEConfig())
    return vae.to(dtype).eval().requires_grad_(False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device: torch.device, repeat: int) -> tuple[torch.Tensor, float, float | None]:
    """(result, best seconds, peak GiB allocated during the call, or None off-GPU)."""
    best, peak, result = float("inf"), None, None
    for _ in range(repeat):
        result = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**30
    return result, best, peak


def _encode_random_video(vae: WanVAE, args: argparse.Namespace, size: tuple[int, int], tiling: dict):
    """Encode a random video of `size` (width, height); the video is freed on return."""
    width, height = size
    video = torch.rand(1, 3, args.frames, height, width, device=args.device) * 2 - 1
    return measure(lambda: vae.encode(video, **tiling), torch.device(args.device), args.repeat)


def run_case(vae: WanVAE, args: argparse.Namespace, width: int, height: int, tiled: bool) -> dict:
    tiling = {"tiled": tiled, "tile": args.tile, "overlap": args.overlap}
    record = {"size": f"{width}x{height}", "frames": args.frames, "mode": "tiled" if tiled else "untiled"}
    try:
        latent, record["encode_s"], record["encode_peak_gib"] = _encode_random_video(vae, args, (width, height), tiling)
        _, record["decode_s"], record["decode_peak_gib"] = measure(
            lambda: vae.decode(latent, **tiling), torch.device(args.device), args.repeat)
    except torch.cuda.OutOfMemoryError as error:
        record["error"] = f"out of memory: {str(error).splitlines()[0]}"
    return record


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.memory_cap_gib and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * 2**30 / total), index)
    vae = build_vae(args)
    # warm-up (kernel selection, allocator) on a small clip
    vae.decode(vae.encode(torch.zeros(1, 3, 5, 64, 64, device=device)))
    header = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype, "config": str(vae.config), "tile": args.tile, "overlap": args.overlap,
        "weights": args.weights or "random", "memory_cap_gib": args.memory_cap_gib, "torch": torch.__version__, "command": " ".join(sys.argv),
    }
    print(json.dumps(header))
    results = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        for mode in args.modes.split(","):
            if mode not in ("tiled", "untiled"):
                raise SystemExit(f"--modes: unknown mode '{mode}' (expected tiled or untiled)")
            record = run_case(vae, args, width, height, tiled=mode == "tiled")
            results.append(record)
            print(json.dumps(record))
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": header, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
