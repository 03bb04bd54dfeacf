"""Time our Wan2.1 VAE or the official one (Wan2.2 `wan/modules/vae2_1.py`) on the same random weights, one per run.

One implementation per process, so that a whole-process timer can pair the two runs:

  python benchmarks/vae_vs_official.py --impl ours --ref .official
  python benchmarks/vae_vs_official.py --impl official --ref .official     # .official: `git archive` of Wan2.2's wan/
  python benchmarks/vae_vs_official.py --impl ours --ref .official --tiled --tile 32 --overlap 8   # our tiled path

Builds the released configuration (dim 96, z_dim 16) with seeded random weights, encodes a random video and decodes
its latent (untiled, float32 unless --dtype) once as a warm-up and once timed, and prints one JSON line with the
encode and decode seconds (wall and process CPU; on a shared machine compare CPU seconds with --threads 1). With
--check, both implementations run and the largest differences of their outputs are printed too. --tiled codes our
side in spatial tiles (`tile` / `overlap` in latent cells); the official VAE has no tiling, so the tiled figure is to
be set against the official untiled one for the same video (the same pixels, so the ratio of seconds is the ratio of
cost per pixel).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wan_animate.loading.vae import vae_from_state_dict  # noqa: E402
from wan_animate.model.vae import DEFAULT_OVERLAP, DEFAULT_TILE  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def official_vae_class(ref: str):
    """The official `WanVAE_` class, imported from the source tree `ref` without its package __init__."""
    sys.path.insert(0, ref)
    for name, sub in [("wan", "wan"), ("wan.modules", "wan/modules")]:
        module = types.ModuleType(name)
        module.__path__ = [os.path.join(ref, sub)]
        sys.modules[name] = module
    from wan.modules.vae2_1 import WanVAE_
    return WanVAE_


def random_state(ref: str, seed: int) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The official module at the released configuration and its seeded random state dict."""
    cls = official_vae_class(ref)
    torch.manual_seed(seed)
    official = cls(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                   temperal_downsample=[False, True, True]).eval().requires_grad_(False)
    with torch.no_grad():
        for tensor in official.state_dict().values():
            tensor.copy_(torch.randn_like(tensor) * 0.05)
    return official, official.state_dict()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=["ours", "official"], default="ours")
    p.add_argument("--ref", required=True, help="official Wan2.2 source tree (the folder holding wan/)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--frames", type=int, default=5, help="4k+1")
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--check", action="store_true", help="run both and print the largest output differences")
    p.add_argument("--tiled", action="store_true", help="our VAE codes in spatial tiles (the official has none)")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help="tile size in latent cells (8 px), with --tiled")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="tile overlap in latent cells, with --tiled")
    a = p.parse_args()
    if a.tiled and a.impl == "official":
        p.error("--tiled applies to --impl ours only: the official VAE has no tiling")
    if a.threads:
        torch.set_num_threads(a.threads)
    device, dtype = torch.device(a.device), DTYPES[a.dtype]
    official, state = random_state(a.ref, seed=0)
    ours = vae_from_state_dict({k: v.clone() for k, v in state.items()})
    official, ours = official.to(device, dtype), ours.to(device, dtype)
    ours.set_latent_stats([0.0] * 16, [1.0] * 16)
    scale = [torch.zeros(16, device=device, dtype=dtype), torch.ones(16, device=device, dtype=dtype)]
    video = (torch.rand(1, 3, a.frames, a.height, a.width, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    video = video.to(device, dtype)

    tiling = dict(tiled=a.tiled, tile=a.tile, overlap=a.overlap)

    def run(impl: str) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """Encode then decode; the latent, the video and [encode s, decode s, encode cpu s, decode cpu s]."""
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        with torch.no_grad():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            latent = ours.encode(video, **tiling) if impl == "ours" else official.encode(video, scale)
            sync()
            t1, c1 = time.perf_counter(), time.process_time()
            decoded = ours.decode(latent.to(dtype), **tiling) if impl == "ours" else official.decode(latent, scale)
            sync()
            t2, c2 = time.perf_counter(), time.process_time()
        return latent.float(), decoded.float().clamp(-1, 1), [t1 - t0, t2 - t1, c1 - c0, c2 - c1]

    run(a.impl)  # warm-up: first-call kernel selection and allocations
    latent, decoded, times = run(a.impl)
    result = dict(impl=a.impl, **{k: round(v, 4) for k, v in zip(("encode_s", "decode_s", "encode_cpu_s",
                                                                  "decode_cpu_s"), times)},
                  frames=a.frames, width=a.width, height=a.height, dtype=a.dtype, device=str(device),
                  tiled=a.tiled, **(dict(tile=a.tile, overlap=a.overlap) if a.tiled else {}))
    if a.check:
        other = run("official" if a.impl == "ours" else "ours")
        result.update(latent_max_diff=float((latent - other[0]).abs().max()),
                      video_max_diff=float((decoded - other[1]).abs().max()))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
