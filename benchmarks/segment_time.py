"""Seconds to a finished 77-frame segment: the real `generate()` path (VAE encode, DiT steps, VAE decode) with random
weights on one GPU; prints one JSON line.

The 14B DiT is built with random weights directly on the device (`dit_step_bench.build_model`), the VAE at the
released size (dim 96) with random weights (as `vae_bench.py`), and `wan_animate.pipeline.generate.generate` runs one
segment from synthetic AnimateInputs: reference image, pose video, 512x512 face crops, random text context
[512, 4096] and CLIP features [1, 257, 1280]. Timings do not depend on the weight values.

    python3 benchmarks/segment_time.py                          # 832x480, 77 frames, 20 steps dpm++, cfg 1, GPU
    python3 benchmarks/segment_time.py --steps 4                # shorter run
    python3 benchmarks/segment_time.py --cache-threshold 0.05   # step caching: skipped_calls of model_calls + skipped
    python3 benchmarks/segment_time.py --tiny --device cpu      # smoke run of the script (tiny models, seconds)

Reported: `total_s` (the whole `generate` call, from preprocessed inputs to the decoded video), `vae_s` (encode +
decode, timed around each VAE call), `dit_steps_s` (the model calls of the denoising loop), `encode_face_s` (the
motion encoder, once per segment and guidance branch), `other_s` (the rest: conditioning, sampler arithmetic,
copies), `peak_gib` (torch.cuda.max_memory_allocated over the call, weights included).

Preprocessing (person detection + whole-body pose ONNX models) is not timed here: its official models are not
available to this script. `preprocess_s_estimate` is 77 frames at the figure measured in benchmarks/README.md
("Preprocessing": 0.65 frames/s for ViT-H + YOLOv10-M-sized stand-ins, 2 idle CPU cores; no GPU figure exists), and
`total_with_preprocess_s` adds it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dit_step_bench import TINY, build_model  # noqa: E402
from vae_bench import TINY_CONFIG as TINY_VAE  # noqa: E402
from wan_animate.model.dit import WanAnimateConfig  # noqa: E402
from wan_animate.model.vae import VAEConfig, WanVAE  # noqa: E402
from wan_animate.model.vae_coding import VAECoder  # noqa: E402
from wan_animate.pipeline.generate import AnimateInputs, GenerationSettings, generate  # noqa: E402
from wan_animate.runtime.attention import attention_backend  # noqa: E402

GIB = 1 << 30
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PREPROCESS_FPS_CPU = 0.65  # benchmarks/README.md, "Preprocessing": ViT-H pose + detector, 2 idle CPU cores
TEXT_TOKENS = 512


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny DiT and VAE, 9 frames at 64x64 (smoke run)")
    p.add_argument("--width", type=int, default=None, help="default 832 (64 with --tiny)")
    p.add_argument("--height", type=int, default=None, help="default 480 (64 with --tiny)")
    p.add_argument("--frames", type=int, default=None, help="segment length, 4k+1; default 77 (9 with --tiny)")
    p.add_argument("--steps", type=int, default=None, help="default 20 (2 with --tiny)")
    p.add_argument("--solver", default="dpm++")
    p.add_argument("--cfg", type=float, default=1.0, help="> 1 adds the unconditional pass (a negative context)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="DiT compute dtype (bf16; fp32 on CPU)")
    p.add_argument("--vae-dtype", default="fp32", choices=sorted(DTYPES), help="the VAE Loader's default, fp32")
    p.add_argument("--vae-tiled", action="store_true")
    p.add_argument("--fp8", action="store_true", help="DiT block Linears stored in fp8 (upcast per layer)")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "sage", "flash", "auto"])
    p.add_argument("--cache-threshold", type=float, default=0.0, help="step caching (0: off, every call computed)")
    a = p.parse_args(argv)
    a.width = a.width or (64 if a.tiny else 832)
    a.height = a.height or (64 if a.tiny else 480)
    a.frames = a.frames or (9 if a.tiny else 77)
    a.steps = a.steps or (2 if a.tiny else 20)
    a.dtype = a.dtype or ("fp32" if a.device == "cpu" else "bf16")
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("segment_time: CUDA is not available here; run it on a GPU, or --tiny --device cpu for a smoke run")
    return a


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Seconds spent in named parts, each call timed with a device synchronisation on both sides."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self.calls = device, {}, {}

    def run(self, part: str, fn, *args, **kwargs):
        synchronize(self.device)
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        synchronize(self.device)
        self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start
        self.calls[part] = self.calls.get(part, 0) + 1
        return result


class TimedVAE:
    """A VideoVAE whose encode and decode calls are timed."""

    def __init__(self, coder: VAECoder, watch: Stopwatch) -> None:
        self.coder, self.watch = coder, watch

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.watch.run("vae_encode", self.coder.encode, video)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.watch.run("vae_decode", self.coder.decode, latents)


class TimedDiT:
    """An AnimateDiT whose model calls (denoising steps) and face encodings are timed."""

    def __init__(self, model, watch: Stopwatch) -> None:
        self.model, self.watch = model, watch

    def encode_face(self, face: torch.Tensor) -> torch.Tensor:
        return self.watch.run("encode_face", self.model.encode_face, face)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self.watch.run("dit_step", self.model, *args, **kwargs)


def synthetic_inputs(a: argparse.Namespace, config: WanAnimateConfig) -> AnimateInputs:
    """A reference image, a pose video, face crops (512x512 at 14B) and random text / CLIP embeddings of the model's
    sizes."""
    g = torch.Generator().manual_seed(0)
    return AnimateInputs(
        reference=torch.rand(a.height, a.width, 3, generator=g),
        pose=torch.randint(0, 256, (a.frames, a.height, a.width, 3), generator=g, dtype=torch.uint8),
        face=torch.randint(0, 256, (a.frames, config.face_size, config.face_size, 3), generator=g, dtype=torch.uint8),
        context=torch.randn(TEXT_TOKENS, config.text_dim, generator=g),
        context_null=torch.randn(TEXT_TOKENS, config.text_dim, generator=g) if a.cfg > 1 else None,
        clip_fea=torch.randn(1, 257, config.clip_dim, generator=g),
    )


def build_vae(a: argparse.Namespace, device: torch.device) -> VAECoder:
    torch.manual_seed(0)
    with torch.device(device):
        vae = WanVAE(TINY_VAE if a.tiny else VAEConfig())
    return VAECoder(vae.to(DTYPES[a.vae_dtype]).eval().requires_grad_(False), tiled=a.vae_tiled)


def warm_up(model, coder: VAECoder, config: WanAnimateConfig, device: torch.device, dtype: torch.dtype) -> None:
    """One small VAE round trip and one small DiT forward: kernel selection and allocator growth happen here."""
    with torch.no_grad():
        coder.decode(coder.encode(torch.zeros(1, 3, 5, 64, 64, device=device)))
        frames, h, w = 3, 4, 4  # latent frames of a 5-frame video, plus the reference latent in front
        model(x=torch.zeros(16, frames, h, w, device=device, dtype=dtype), t=torch.tensor([900.0], device=device),
              context=torch.zeros(8, config.text_dim, device=device, dtype=dtype),
              clip_fea=torch.zeros(1, 257, config.clip_dim, device=device, dtype=dtype),
              y=torch.zeros(config.in_dim - 16, frames, h, w, device=device, dtype=dtype),
              pose_latents=torch.zeros(config.pose_dim, frames - 1, h, w, device=device, dtype=dtype),
              motion_vec=model.encode_face(torch.zeros(1, 3, 5, config.face_size, config.face_size, device=device,
                                                       dtype=dtype)))


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    device, dtype = torch.device(a.device), DTYPES[a.dtype]
    cuda = device.type == "cuda"
    config = WanAnimateConfig(**TINY) if a.tiny else WanAnimateConfig()
    started = time.perf_counter()
    model = build_model(config, device, dtype, a.fp8)
    coder = build_vae(a, device)
    build_s = time.perf_counter() - started
    inputs = synthetic_inputs(a, config)
    settings = GenerationSettings(clip_len=a.frames, solver=a.solver, steps=a.steps, guide_scale=a.cfg,
                                  cache_threshold=a.cache_threshold)
    with attention_backend(a.attention):
        warm_up(model, coder, config, device, dtype)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        watch = Stopwatch(device)
        with torch.no_grad():
            video = watch.run("total", generate, TimedDiT(model, watch), TimedVAE(coder, watch), inputs, settings,
                              device=device)
    s = watch.seconds
    vae_s = s.get("vae_encode", 0.0) + s.get("vae_decode", 0.0)
    timed = vae_s + s.get("dit_step", 0.0) + s.get("encode_face", 0.0)
    preprocess_s = a.frames / PREPROCESS_FPS_CPU
    result = dict(
        total_s=round(s["total"], 3), vae_s=round(vae_s, 3), vae_encode_s=round(s.get("vae_encode", 0.0), 3),
        vae_decode_s=round(s.get("vae_decode", 0.0), 3), vae_calls=watch.calls.get("vae_encode", 0)
        + watch.calls.get("vae_decode", 0),
        dit_steps_s=round(s.get("dit_step", 0.0), 3), model_calls=watch.calls.get("dit_step", 0),
        skipped_calls=a.steps * (2 if a.cfg > 1 else 1) - watch.calls.get("dit_step", 0),
        cache_threshold=a.cache_threshold,
        s_per_model_call=round(s.get("dit_step", 0.0) / max(1, watch.calls.get("dit_step", 0)), 4),
        encode_face_s=round(s.get("encode_face", 0.0), 3), other_s=round(s["total"] - timed, 3),
        peak_gib=round(torch.cuda.max_memory_allocated(device) / GIB, 2) if cuda else None,
        preprocess_s_estimate=round(preprocess_s, 1),
        total_with_preprocess_s=round(s["total"] + preprocess_s, 1),
        preprocess_note=f"not timed: {a.frames} frames at {PREPROCESS_FPS_CPU} fps, benchmarks/README.md "
                        "'Preprocessing' (2 idle CPU cores, official-size stand-ins); no GPU figure measured",
        build_s=round(build_s, 2), output_frames=int(video.shape[1]), width=a.width, height=a.height,
        frames=a.frames, steps=a.steps, solver=a.solver, cfg=a.cfg, dtype=a.dtype, vae_dtype=a.vae_dtype,
        vae_tiled=a.vae_tiled, fp8=a.fp8, attention=a.attention, dim=config.dim, layers=config.num_layers,
        device=torch.cuda.get_device_name(device) if cuda else "cpu", torch=torch.__version__,
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
