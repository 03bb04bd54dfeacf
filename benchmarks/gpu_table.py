"""The whole speed table on one GPU in one run: ours in every configuration, and the official step, side by side.

Builds the released 14B DiT once with random weights directly on the GPU (no disk), times warm-up 1 + `--steps`
timed denoising steps per configuration, and prints one JSON line per row and then the Markdown table of
benchmarks/README.md. Rows (all at --sizes, default 832x480 and 1280x720, 77 frames):

  bf16 resident, SDPA            every size
  bf16, torch.compile            every size (skipped with --no-compile)
  bf16, SageAttention / Flash    every size; only when the package imports
  bf16 + offload N               first size, the last --offload-blocks blocks streamed from pinned host memory
  fp8 storage (upcast)           first size
  fp8 matmul (torch._scaled_mm)  every size; GPUs with compute capability >= 8.9
  fp8 matmul + offload auto      first size, planned for --vram-budget-gib (14)
  official WanAnimateModel       every size, in its own process (`--official-bench`, skipped when the file is absent)

MFU = the step's FLOPs (linear layers 2 * tokens * in * out, self-attention 4 * tokens^2 * dim, cross-attention
4 * tokens * (512 + 257) * dim, face adapter) / s_per_step / --peak-tflops (989: H100/H200 dense bf16). The official
step also runs the face motion encoder (ours runs it once per segment; `encode_face_s` in the JSON).

  python benchmarks/gpu_table.py --official-bench .official/official_step_bench.py --official-ref .official
  python benchmarks/gpu_table.py --tiny --device cpu --no-compile      (smoke run of the script itself)
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from dit_step_bench import TINY, build_model, step_inputs  # noqa: E402
from wan_animate.loading.dit import FP8_STORAGE_PREFIXES  # noqa: E402
from wan_animate.model.dit import WanAnimateConfig  # noqa: E402
from wan_animate.runtime import memory  # noqa: E402
from wan_animate.runtime.attention import attention_backend, load_flash_attn, load_sageattn  # noqa: E402
from wan_animate.runtime.compile import compile_blocks, uncompile_blocks  # noqa: E402
from wan_animate.runtime.fp8 import FP8Linear, device_has_fp8_matmul, quantize, set_fp8_matmul  # noqa: E402
from wan_animate.runtime.offload import enable_block_offload  # noqa: E402

GIB = 1 << 30
TEXT_TOKENS, CLIP_TOKENS = 512, 257


def step_flops(tokens: int, c: WanAnimateConfig, frames: int) -> float:
    """FLOPs of one DiT forward (matrix products and attention only)."""
    d, context = c.dim, TEXT_TOKENS + CLIP_TOKENS
    block = (2 * tokens * d * d * 4  # self-attention q, k, v, o
             + 4 * tokens * tokens * d  # QK^T and PV
             + 2 * tokens * d * d * 2 + 2 * context * d * d * 2  # cross-attention q, o; k, v of text and image
             + 4 * tokens * context * d
             + 2 * tokens * d * c.ffn_dim * 2)  # FFN
    face_tokens = frames * (c.face_heads + 1)
    face = 2 * tokens * d * d * 2 + 2 * face_tokens * d * 2 * d + 4 * tokens * (c.face_heads + 1) * d
    return c.num_layers * block + c.num_face_blocks * face


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny model and latents (smoke run)")
    p.add_argument("--sizes", default="832x480,1280x720", help="comma-separated WIDTHxHEIGHT; the first gets all rows")
    p.add_argument("--frames", type=int, default=77)
    p.add_argument("--steps", type=int, default=2, help="timed steps per row, after one warm-up")
    p.add_argument("--vram-budget-gib", type=float, default=14.0, help="budget of the offload-auto row")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak for the MFU column")
    p.add_argument("--offload-blocks", type=int, default=20, help="blocks streamed in the bf16 offload row")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--official-bench", default=".official/official_step_bench.py",
                   help="the official step benchmark script (skipped when absent)")
    p.add_argument("--official-ref", default=".official", help="the official source tree (holding wan/)")
    a = p.parse_args()
    a.sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    if a.tiny:
        a.sizes, a.frames = [(64, 64)], 9
    return a


class Table:
    def __init__(self, args: argparse.Namespace, config: WanAnimateConfig, device: torch.device):
        self.args, self.config, self.device = args, config, device
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        tokens = row["tokens"]
        flops = step_flops(tokens, self.config, memory.latent_frame_count(self.args.frames) + 1)
        row["tflop_per_step"] = round(flops / 1e12, 1)
        row["mfu"] = round(flops / row["s_per_step"] / (self.args.peak_tflops * 1e12), 3) if row["s_per_step"] else None
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    def markdown(self) -> str:
        lines = ["| size | configuration | s/step | vs official | peak VRAM GiB | MFU |", "|---|---|---|---|---|---|"]
        official = {r["size"]: r["s_per_step"] for r in self.rows if r["config"] == "official"}
        for r in self.rows:
            ratio = official.get(r["size"])
            ratio = f"{r['s_per_step'] / ratio:.2f}" if ratio and r["s_per_step"] else "-"
            peak = "-" if r.get("peak_gib") is None else f"{r['peak_gib']:.2f}"
            mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.0f}%"
            lines.append(f"| {r['size']} | {r['config']} | {r['s_per_step']} | {ratio} | {peak} | {mfu} |")
        return "\n".join(lines)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model, inputs: dict, motion_vec: torch.Tensor, steps: int, device: torch.device) -> tuple[float, float]:
    """Median seconds per step after one warm-up, and the peak GiB allocated during the steps."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    with torch.no_grad():
        for step in range(steps + 1):
            sync(device)
            t0 = time.perf_counter()
            out = model(motion_vec=motion_vec, **inputs)
            sync(device)
            if step:
                times.append(time.perf_counter() - t0)
            del out
    peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    return round(statistics.median(times), 4), peak and round(peak, 2)


def to_fp8_in_place(model: nn.Module) -> None:
    """Replace the block and face-adapter Linears by FP8Linears holding their per-tensor e4m3 quantisation."""
    for name, module in list(model.named_modules()):
        if type(module) is not nn.Linear or not name.startswith(FP8_STORAGE_PREFIXES):
            continue
        with torch.device("meta"):
            layer = FP8Linear(module.in_features, module.out_features, module.bias is not None)
        data, scale = quantize(module.weight.data)
        layer.weight = nn.Parameter(data, requires_grad=False)
        layer.scale_weight = scale
        layer.bias = module.bias
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer)
        del module, data


def official_rows(a: argparse.Namespace, table: Table) -> None:
    script = Path(a.official_bench)
    if not script.is_file():
        print(f"official step skipped: {script} not found", flush=True)
        return
    for width, height in a.sizes:
        cmd = [sys.executable, str(script), "--ref", a.official_ref, "--width", str(width), "--height", str(height),
               "--frames", str(a.frames), "--steps", str(a.steps), "--device", a.device]
        if a.tiny:
            cmd += ["--dtype", "float32", "--dim", "128", "--heads", "2", "--layers", "5", "--ffn", "256"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(f"official step at {width}x{height} failed:\n{done.stderr[-2000:]}", flush=True)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        table.add(dict(size=f"{width}x{height}", config="official", s_per_step=result["s_per_step"],
                       peak_gib=result["peak_gib"], tokens=result["tokens"]))


def main() -> None:
    a = parse_args()
    device = torch.device(a.device)
    config = WanAnimateConfig(**TINY) if a.tiny else WanAnimateConfig()
    table = Table(a, config, device)
    started = time.perf_counter()
    official_rows(a, table)  # first, in their own processes, while this one holds no GPU memory

    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    model = build_model(config, device, dtype, fp8=False)
    cases = []
    for width, height in a.sizes:
        size_args = argparse.Namespace(frames=a.frames, height=height, width=width)
        inputs = step_inputs(config, size_args, device, dtype)
        face = torch.rand(1, 3, a.frames, config.face_size, config.face_size, device=device, dtype=dtype) * 2 - 1
        with torch.no_grad():
            sync(device)
            t0 = time.perf_counter()
            motion_vec = model.encode_face(face)
            sync(device)
        cases.append((f"{width}x{height}", inputs, motion_vec, memory.token_count(a.frames, height, width),
                      round(time.perf_counter() - t0, 3)))
        del face

    def row(config_name: str, case, backend: str = "sdpa", **extra) -> None:
        size, inputs, motion_vec, tokens, encode_face_s = case
        with attention_backend(backend):
            s, peak = time_steps(model, inputs, motion_vec, a.steps, device)
        table.add(dict(size=size, config=config_name, s_per_step=s, peak_gib=peak, tokens=tokens,
                       encode_face_s=encode_face_s, **extra))

    for case in cases:
        row("ours bf16 resident, sdpa", case)
    if not a.no_compile:
        compile_blocks(model.blocks)
        for case in cases:
            row("ours bf16 resident, sdpa, torch.compile (blocks)", case)
        uncompile_blocks(model.blocks)
    for backend, installed in {"sage": load_sageattn() is not None, "flash": load_flash_attn() is not None}.items():
        if not installed:
            print(f"{backend} row skipped: the package does not import", flush=True)
        for case in cases if installed else ():
            row(f"ours bf16 resident, {backend}", case, backend)
    if device.type == "cuda":
        offloader = enable_block_offload(model, device, a.offload_blocks, 1)
        row(f"ours bf16 + offload {a.offload_blocks} blocks, sdpa", cases[0], offload_blocks=a.offload_blocks,
            on_demand_loads=offloader.stats.on_demand)
        offloader.remove()
        model.to(device)  # the streamed blocks come back for the fp8 rows

    to_fp8_in_place(model)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    row("ours fp8 storage (upcast), sdpa", cases[0])
    if device_has_fp8_matmul(device) or a.tiny:
        set_fp8_matmul(model, True)
        for case in cases:
            row("ours fp8 matmul, sdpa", case)
    else:
        print("fp8 matmul rows skipped: no fp8 tensor cores on this device", flush=True)
    if device.type == "cuda":
        model.to("cpu")
        torch.cuda.empty_cache()
        tokens = cases[0][3]
        sizes = memory.block_bytes(model.blocks)
        matmul = "fp8 matmul" if device_has_fp8_matmul(device) else "fp8 storage"
        try:
            count = memory.resolve_offload_count(
                "auto", sizes, int(a.vram_budget_gib * GIB),
                memory.estimate_activation_bytes(tokens, config.dim, config.ffn_dim, dtype)
                + memory.fp8_matmul_workspace_bytes(model, tokens, config.dim, config.ffn_dim, dtype),  # as DiTHandle
                memory.module_bytes(model) - sum(sizes), 1, memory.DEFAULT_MARGIN_BYTES)
        except memory.MemoryPlanError as error:
            print(f"{matmul} + offload auto row skipped: {error}", flush=True)
        else:
            offloader = enable_block_offload(model, device, count, 1)
            row(f"ours {matmul} + offload auto ({a.vram_budget_gib:g} GiB budget), sdpa", cases[0],
                offload_blocks=count, on_demand_loads=offloader.stats.on_demand)
            offloader.remove()

    print(f"\ndevice: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch "
          f"{torch.__version__}, {a.frames} frames, warm-up 1 + {a.steps} timed steps per row, "
          f"whole run {time.perf_counter() - started:.0f} s\n")
    print(table.markdown())


if __name__ == "__main__":
    main()
