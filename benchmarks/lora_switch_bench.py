"""What a LoRA change costs: switching the stack of a loaded DiT at run time against reloading the checkpoint.

Writes a random-weight DiT checkpoint and a random LoRA (rank --rank on every block Linear layer, plus `diff_b` bias
and LightX2V-style `diff_m` modulation deltas) to --workdir, then through `DiTHandle` (what the sampler uses) times:
  load_s             the first load of the checkpoint
  apply_s            the first sync to the LoRA at strength 1 (parses the LoRA file)
  strength_change_s  a sync to strength 0.5 (what re-queueing with another strength costs)
  remove_s           a sync to no LoRA
  reload_merge_s     what the previous code did on any stack change: load the checkpoint again and merge the LoRA
and the seconds per DiT forward (median of --steps after one warm-up) with no LoRA, with the run-time LoRA, and
with the LoRA merged into the weights (`runtime_over_merged`, `runtime_over_none`: ratios of those). Prints one JSON
line.

  python3 benchmarks/lora_switch_bench.py --size medium --device cpu --dtype float32 --threads 1
  python3 benchmarks/lora_switch_bench.py --size 14b --device cuda --width 832 --height 480 --frames 21 --rank 64
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dit_step_bench import build_model, step_inputs  # noqa: E402
from wan_animate.loading.dit import load_dit  # noqa: E402
from wan_animate.loading.lora import apply_loras, load_lora  # noqa: E402
from wan_animate.loading.model_handle import STORAGE, DiTHandle, DiTOptions  # noqa: E402
from wan_animate.model.dit import WanAnimateConfig  # noqa: E402
from wan_animate.runtime import memory  # noqa: E402

SIZES = {
    "tiny": dict(dim=128, ffn_dim=256, num_heads=2, num_layers=5, text_dim=64, clip_dim=32, motion_encoder_dim=32,
                 motion_dim=4, motion_channels=(8, 16, 16, 16), face_hidden_dim=32),
    "medium": dict(dim=1024, ffn_dim=2816, num_heads=8, num_layers=12, text_dim=256, clip_dim=128,
                   motion_encoder_dim=64, motion_dim=8, motion_channels=(8, 16, 32, 32), face_hidden_dim=64),
    "14b": {},
}
LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
           "cross_attn.v", "cross_attn.o", "cross_attn.k_img", "cross_attn.v_img", "ffn.0", "ffn.2")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="medium", choices=sorted(SIZES))
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--storage", default="default", choices=sorted(STORAGE))
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--frames", type=int, default=9, help="4k+1")
    p.add_argument("--steps", type=int, default=2, help="timed forwards per configuration, after one warm-up")
    p.add_argument("--workdir", default=None, help="where the checkpoint and LoRA are written (default: a temp dir)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--skip-reload", action="store_true",
                   help="leave out the previous code's reload + merge and the merged forward (load_s is a reload)")
    return p.parse_args()


def write_lora(config: WanAnimateConfig, rank: int, path: str) -> None:
    g = torch.Generator().manual_seed(1)
    state = {}
    for block in range(config.num_layers):
        for layer in LINEARS:
            fan_out, fan_in = (config.ffn_dim, config.dim) if layer == "ffn.0" else \
                (config.dim, config.ffn_dim) if layer == "ffn.2" else (config.dim, config.dim)
            key = f"diffusion_model.blocks.{block}.{layer}"
            state[f"{key}.lora_down.weight"] = (torch.randn(rank, fan_in, generator=g) * 0.01).bfloat16()
            state[f"{key}.lora_up.weight"] = (torch.randn(fan_out, rank, generator=g) * 0.01).bfloat16()
            state[f"{key}.alpha"] = torch.tensor(float(rank))
        state[f"diffusion_model.blocks.{block}.ffn.0.diff_b"] = torch.randn(config.ffn_dim, generator=g) * 1e-3
        state[f"diffusion_model.blocks.{block}.diff_m"] = torch.randn(1, 6, config.dim, generator=g) * 1e-3
    save_file(state, path)


def timed(fn, device: torch.device):
    synchronize(device)
    t0 = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, round(time.perf_counter() - t0, 4)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def activated_step_seconds(handle: DiTHandle, tokens: int, inputs: dict, face: torch.Tensor, steps: int,
                           device: torch.device) -> float:
    """Seconds per forward of the handle's model placed on `device` (parked again afterwards)."""
    with handle.activate(device, tokens) as model:
        return step_seconds(model, inputs, face, steps, device)


def step_seconds(model, inputs: dict, face: torch.Tensor, steps: int, device: torch.device) -> float:
    with torch.no_grad():
        motion_vec = model.encode_face(face)
        times = []
        for step in range(steps + 1):
            _, seconds = timed(lambda: model(motion_vec=motion_vec, **inputs), device)
            if step:
                times.append(seconds)
    return round(statistics.median(times), 4)


def main() -> None:
    a = parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device, dtype = torch.device(a.device), getattr(torch, a.dtype)
    config = WanAnimateConfig(**SIZES[a.size])
    workdir = Path(a.workdir or tempfile.mkdtemp(prefix="lora_bench_"))
    dit_path, lora_path = str(workdir / "dit.safetensors"), str(workdir / "lora.safetensors")
    built = build_model(config, device, dtype, fp8=False)
    save_file({k: v.contiguous() for k, v in built.state_dict().items()}, dit_path)
    del built
    write_lora(config, a.rank, lora_path)
    if device.type == "cuda":
        torch.cuda.empty_cache()

    tokens = memory.token_count(a.frames, a.height, a.width)
    inputs = step_inputs(config, a, device, dtype)
    face = torch.rand(1, 3, a.frames, config.face_size, config.face_size, device=device, dtype=dtype) * 2 - 1
    base = DiTHandle(dit_path, DiTOptions(dtype=dtype, storage=a.storage))
    result = dict(size=a.size, dim=config.dim, layers=config.num_layers, rank=a.rank, dtype=a.dtype,
                  storage=a.storage, tokens=tokens, device=str(device))
    _, result["load_s"] = timed(base.model, device)
    steps = {"none": activated_step_seconds(base, tokens, inputs, face, a.steps, device)}
    with_lora = base.with_lora(lora_path, 1.0)
    _, result["apply_s"] = timed(with_lora.sync_loras, device)
    steps["runtime"] = activated_step_seconds(with_lora, tokens, inputs, face, a.steps, device)
    _, result["strength_change_s"] = timed(base.with_lora(lora_path, 0.5).sync_loras, device)
    _, result["remove_s"] = timed(base.sync_loras, device)
    base.release()  # no second copy of the model in host memory while the previous code's path is timed

    def reload_and_merge():
        model = load_dit(dit_path, dtype=dtype, storage_dtype=STORAGE[a.storage])
        apply_loras(model, [(load_lora(lora_path), 1.0)], keep_originals=False)
        return model

    if not a.skip_reload:
        merged, result["reload_merge_s"] = timed(reload_and_merge, device)
        steps["merged"] = step_seconds(merged.to(device), inputs, face, a.steps, device)
        result["runtime_over_merged"] = round(steps["runtime"] / steps["merged"], 3)
    result["runtime_over_none"] = round(steps["runtime"] / steps["none"], 3)
    result.update({f"step_s_{k}": v for k, v in steps.items()})
    result["max_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
