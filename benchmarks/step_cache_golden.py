"""Step caching on the tiny golden pipeline cases: wall time, model calls skipped, and the difference from uncached.

  WAN_ANIMATE_GOLDEN=path/to/golden python benchmarks/step_cache_golden.py --thresholds 0 0.05 0.2 1 4

Runs each case of the golden `pipeline/` section (tiny random DiT and VAE, float32 on CPU) with every threshold and
prints one JSON line per run: seconds, skipped model calls per segment, max |video - uncached video| and
max |video - official golden video|. The golden DiT has random weights, so how often steps are skipped here says
nothing about trained weights; the point is the bookkeeping: 0 is exact, skipping costs accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_pipeline_golden import golden_inputs, golden_settings  # noqa: E402
from wan_animate.loading.dit import load_dit  # noqa: E402
from wan_animate.loading.vae import load_vae  # noqa: E402
from wan_animate.pipeline.generate import generate  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.05, 0.2, 1.0, 4.0])
    p.add_argument("--cases", nargs="+", default=None, help="case folder names (default: all)")
    a = p.parse_args()
    section = Path(os.environ.get("WAN_ANIMATE_GOLDEN", ROOT.parent / "shared" / "golden")) / "pipeline"
    for case in sorted(c for c in section.iterdir() if (c / "meta.json").is_file()):
        if a.cases and case.name not in a.cases:
            continue
        meta = json.loads((case / "meta.json").read_text())
        dit = load_dit(str((case / meta["dit"]).resolve()), device="cpu", dtype=torch.float32)
        vae = load_vae(str((case / meta["vae"]).resolve()), dtype=torch.float32)
        noise_file = load_file(str(case / "noise.safetensors"))
        noise = [noise_file[f"noise_{k}"] for k in range(meta["segments"])]
        golden = load_file(str(case / "outputs.safetensors"))["video"]
        inputs = golden_inputs(section, meta["mode"])
        uncached = None
        for threshold in a.thresholds:
            settings = golden_settings(meta)
            settings.cache_threshold = threshold
            trace: dict = {}
            t0 = time.perf_counter()
            video = generate(dit, vae, inputs, settings, noise=noise, trace=trace)
            seconds = time.perf_counter() - t0
            uncached = video if uncached is None and threshold == 0 else uncached
            print(json.dumps(dict(
                case=case.name, threshold=threshold, seconds=round(seconds, 2),
                skipped=[trace.get(f"cache_reused_{k}", 0) for k in range(meta["segments"])],
                vs_uncached=None if uncached is None else float((video - uncached).abs().max()),
                vs_golden=float((video - golden.float()).abs().max()))), flush=True)


if __name__ == "__main__":
    main()
