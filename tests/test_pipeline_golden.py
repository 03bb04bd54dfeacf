"""Golden parity of the whole generation path against the official WanAnimate.generate (tolerance 5e-4 relative).

One test per case folder under golden pipeline/: the DiT and VAE that meta.json names are loaded through the real
loaders, the case's noise is fed in, and the output video is compared; on failure the first intermediate that differs
(timesteps, then y_k, pose_latents_k, latent_k of the first differing segment) is reported.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import absent_golden_param, assert_close_golden, golden_root, golden_section
from wan_animate.pipeline.generate import AnimateInputs, GenerationSettings, generate

REL = 5e-4


def case_folders() -> list[Path]:
    root = golden_root() / "pipeline"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "meta.json").is_file())


def case_params() -> list:
    return case_folders() or absent_golden_param(golden_root() / "pipeline")


def golden_inputs(section: Path, mode: str) -> AnimateInputs:
    raw = load_file(str(section / "inputs.safetensors"))
    replace = mode == "replace"
    return AnimateInputs(
        reference=raw["ref_u8"],
        pose=raw["pose_u8"],
        face=raw["face_u8"],
        context=raw["context"],
        clip_fea=raw["clip_fea"],
        context_null=raw.get("context_null"),
        background=raw["bg_u8"] if replace else None,
        person_mask=raw["mask_u8"] if replace else None,
    )


def golden_settings(meta: dict) -> GenerationSettings:
    return GenerationSettings(
        mode=meta["mode"],
        clip_len=meta["clip_len"],
        refert_num=meta["refert_num"],
        solver=meta["solver"],
        steps=meta["steps"],
        shift=meta["shift"],
        guide_scale=meta["guide_scale"],
    )


def max_error(ours: torch.Tensor, golden: torch.Tensor) -> float:
    if ours.shape != golden.shape:
        return float("inf")
    return (ours.float() - golden.float()).abs().max().item()


def first_mismatch(trace: dict, golden: dict, segments: int) -> str | None:
    """Name and error of the first intermediate outside tolerance, in pipeline order."""
    names = ["timesteps"] + [f"{kind}_{k}" for k in range(segments) for kind in ("y", "pose_latents", "latent")]
    for name in names:
        if name not in golden:
            continue
        if name not in trace:
            return f"{name}: not produced"
        err = max_error(trace[name], golden[name])
        bound = REL * max(1.0, golden[name].abs().max().item())
        if err > bound:
            return f"{name}: max error {err:.3e} > {bound:.3e} (shape {tuple(trace[name].shape)})"
    return None


@pytest.mark.parametrize("case", case_params(), ids=lambda p: p.name)
def test_pipeline_golden(case: Path):
    from wan_animate.loading.dit import load_dit
    from wan_animate.loading.vae import load_vae

    section = golden_section("pipeline")
    meta = json.loads((case / "meta.json").read_text())
    dit = load_dit(str((case / meta["dit"]).resolve()), device="cpu", dtype=torch.float32)
    vae = load_vae(str((case / meta["vae"]).resolve()), dtype=torch.float32)
    noise_file = load_file(str(case / "noise.safetensors"))
    noise = [noise_file[f"noise_{k}"] for k in range(meta["segments"])]
    golden = load_file(str(case / "outputs.safetensors"))

    trace: dict = {}
    with torch.no_grad():
        inputs = golden_inputs(section, meta["mode"])
        video = generate(dit, vae, inputs, golden_settings(meta), noise=noise, trace=trace)

    errors = {name: max_error(trace[name], golden[name]) for name in golden if name in trace}
    errors["video"] = max_error(video, golden["video"])
    print(f"\n{case.name} max errors: " + ", ".join(f"{k}={v:.2e}" for k, v in sorted(errors.items())))
    assert video.shape[1] == meta["frames"]
    mismatch = first_mismatch(trace, golden, meta["segments"])
    assert mismatch is None, f"{case.name}: first differing intermediate: {mismatch}"
    assert_close_golden(video, golden["video"], REL, f"{case.name} video")


def test_pipeline_golden_cases_present():
    section = golden_section("pipeline")
    assert case_folders(), f"no case folder with meta.json under {section}"
