"""The cost of the sequence-parallel path: the same DiT steps in-process and through N worker processes.

Builds a random-weight DiT (medium size by default: dim 2048, 16 layers, 16 heads), saves it to a temporary file that
the workers load, runs `--steps` timed forwards (after one warm-up) in this process on cuda:0, then through
`DiTWorkers` on cuda:0..N-1 (one process per GPU, NCCL), and prints one JSON line: seconds per step both ways, the
difference per step, the start-up time of the workers and the largest difference between the two predictions.
With --workers 1 the difference is the engine's own cost (queues, host copies of the latents, process boundary).

  python benchmarks/distributed_overhead.py                       # 1 worker vs in-process (one GPU)
  python benchmarks/distributed_overhead.py --workers 2           # on a machine with 2 GPUs: the speed-up
  python benchmarks/distributed_overhead.py --shard-weights on    # the same with the blocks sharded (FSDP2)
  python benchmarks/distributed_overhead.py --device cpu --tiny   (smoke run of the script itself, gloo)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dit_step_bench  # noqa: E402

from wan_animate.distributed.engine import DiTWorkers  # noqa: E402
from wan_animate.distributed.worker import STEP_INPUTS  # noqa: E402
from wan_animate.loading.dit import load_dit  # noqa: E402
from wan_animate.loading.model_handle import DiTOptions  # noqa: E402
from wan_animate.model.dit import WanAnimateConfig, WanAnimateDiT  # noqa: E402

MEDIUM = dict(dim=2048, ffn_dim=8192, num_heads=16, num_layers=16)
TINY = dict(dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=32, clip_dim=32, motion_encoder_dim=32,
            motion_dim=4, motion_channels=(8, 16, 16), face_hidden_dim=16)
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--frames", type=int, default=77, help="video frames (4k+1)")
    p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    p.add_argument("--shard-weights", default="off", choices=["auto", "on", "off"],
                   help="the workers' FSDP2 weight sharding (on: the cost of gathering each block every step)")
    return p.parse_args()


def random_dit_file(config: WanAnimateConfig, folder: str) -> str:
    model = WanAnimateDiT(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    path = str(Path(folder) / "dit.safetensors")
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}, path)
    return path


def step_inputs(config: WanAnimateConfig, frames: int, height: int, width: int) -> list[torch.Tensor]:
    """dit_step_bench's inputs (float32, on the CPU: the workers move them) in the workers' order, with motion_vec."""
    size = argparse.Namespace(frames=frames, height=height, width=width)
    inputs = dit_step_bench.step_inputs(config, size, torch.device("cpu"), torch.float32)
    latent_frames = inputs["x"].shape[1]
    motion_vec = torch.randn(1, latent_frames, config.face_heads + 1, config.dim)
    return [*(inputs[name] for name in STEP_INPUTS[:-1]), motion_vec]


def timed(run, inputs: list[torch.Tensor], steps: int, sync) -> tuple[float, torch.Tensor]:
    out = run(*inputs)
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        out = run(*inputs)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out.float().cpu()


def main() -> None:
    args = parse_args()
    config = WanAnimateConfig(**(TINY if args.tiny else MEDIUM))
    dtype = DTYPES[args.dtype] if args.device == "cuda" else torch.float32
    device = torch.device("cuda:0" if args.device == "cuda" else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as folder:
        path = random_dit_file(config, folder)
        inputs = step_inputs(config, args.frames, args.height, args.width)
        tokens = inputs[0].shape[1] * inputs[0].shape[2] * inputs[0].shape[3] // 4

        model = load_dit(path, device=device, dtype=dtype)
        on_device = [t.to(device) for t in inputs]
        with torch.no_grad():
            local_s, local_out = timed(model, on_device, args.steps, sync)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

        devices = [f"cuda:{i}" for i in range(args.workers)] if device.type == "cuda" else ["cpu"] * args.workers
        started = time.perf_counter()
        workers = DiTWorkers(path, DiTOptions(dtype=dtype, shard_weights=args.shard_weights), devices)
        startup_s = time.perf_counter() - started
        try:
            with workers.session((), tokens, device) as dit:
                worker_s, worker_out = timed(dit, on_device, args.steps, sync)
        finally:
            workers.shutdown()

    print(json.dumps({
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "workers": args.workers, "sharded": workers.sharded,
        "rank0_weight_gib": round(workers.rank_weight_bytes / 2**30, 3), "tokens": tokens, "dim": config.dim, "layers": config.num_layers,
        "in_process_s_per_step": round(local_s, 4), "workers_s_per_step": round(worker_s, 4),
        "overhead_ms_per_step": round((worker_s - local_s) * 1000, 1),
        "speedup": round(local_s / worker_s, 3), "worker_startup_s": round(startup_s, 1),
        "max_abs_diff": float((worker_out - local_out).abs().max()),
        "out_abs_max": float(local_out.abs().max()),
    }))


if __name__ == "__main__":
    main()
