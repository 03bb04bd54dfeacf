"""Golden parity of the DiT with the official WanAnimateModel forward (float32, tolerance 1e-4 relative).

Sizes come from the golden files; the configuration is inferred from the weights and checked against meta.json.
Measured on the shared set (CPU, float32): motion 1.0e-07, motion_vec 2.9e-06, out 3.6e-06 max abs error
(bounds: 1e-4 * max(1, max|golden|)).
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_close_golden, golden_section
from wan_animate.loading.dit import infer_config, load_dit

REL = 1e-4


@pytest.fixture(scope="module")
def golden():
    root = golden_section("dit")
    model = load_dit(str(root / "weights.safetensors"), device="cpu", dtype=torch.float32)
    inputs = load_file(str(root / "inputs.safetensors"))
    outputs = load_file(str(root / "outputs.safetensors"))
    meta = json.loads((root / "meta.json").read_text())
    with torch.no_grad():
        motion = model.motion_features(inputs["face_u8"].float() / 127.5 - 1)
        motion_vec = model.face_tokens(motion)
        out = model(inputs["x"], inputs["t"], inputs["context"], inputs["clip_fea"], inputs["y"],
                    inputs["pose_latents"], motion_vec)
    return {"model": model, "meta": meta, "outputs": outputs, "ours": {"motion": motion, "motion_vec": motion_vec,
                                                                       "out": out}}


def test_dit_golden_config_inferred(golden):
    config, meta = golden["model"].config, golden["meta"]["config"]
    for name, value in meta.items():
        assert getattr(config, name) == value, f"inferred {name}={getattr(config, name)}, meta.json says {value}"


def test_dit_golden_state_dict_keys_are_official():
    root = golden_section("dit")
    weights = load_file(str(root / "weights.safetensors"))
    from wan_animate.model.dit import WanAnimateDiT

    with torch.device("meta"):
        model = WanAnimateDiT(infer_config(weights))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in weights.items()}


@pytest.mark.parametrize("name", ["motion", "motion_vec", "out"])
def test_dit_golden_outputs(golden, name):
    err = assert_close_golden(golden["ours"][name], golden["outputs"][name], REL, f"dit {name}")
    print(f"dit golden {name}: max abs error {err:.3e}")
