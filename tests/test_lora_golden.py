"""Golden LoRA parity: the official peft path (official.ckpt), its ComfyUI twin and a kohya LoRA with diff/diff_b keys,
applied to the golden DiT and evaluated on the golden DiT inputs. Tolerance 1e-4 * max(1, max |golden|)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import absent_golden_param, assert_close_golden, golden_root, golden_section
from wan_animate.loading.dit import load_dit
from wan_animate.loading.lora import apply_loras, load_lora, remove_loras
from wan_animate.runtime.fp8 import FP8Linear, linear_weight

TOLERANCE = 1e-4
FACE_MODULES = ("motion_encoder.", "face_encoder.")


def _meta() -> dict:
    path = golden_root() / "lora" / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _variants() -> list[tuple[str, str | None]]:
    """(case, None) for each case as given, and (case, equivalent file) for each file said to be equivalent to one
    the case uses (comfy.safetensors for official.ckpt)."""
    meta = _meta()
    if not meta:
        return absent_golden_param(golden_root() / "lora" / "meta.json", arguments=2)
    variants = []
    for case, loras in meta["cases"].items():
        variants.append((case, None))
        files = {file for file, _ in loras}
        variants += [(case, twin) for twin, original in meta.get("equivalent", {}).items() if original in files]
    return variants


@pytest.fixture(scope="module")
def golden_dit():
    dit_dir = golden_section("dit")
    lora_dir = golden_section("lora")
    model = load_dit(str(dit_dir / "weights.safetensors"), dtype=torch.float32)
    inputs = load_file(str(dit_dir / "inputs.safetensors"))
    motion_vec = load_file(str(dit_dir / "outputs.safetensors"))["motion_vec"]
    return model, inputs, motion_vec, lora_dir


@pytest.mark.parametrize("case,twin", _variants())
def test_lora_golden(golden_dit, case, twin):
    model, inputs, golden_motion_vec, lora_dir = golden_dit
    meta = _meta()
    equivalent = meta.get("equivalent", {})
    loras = []
    for file, strength in meta["cases"][case]:
        if twin is not None and equivalent.get(twin) == file:
            file = twin
        loras.append((load_lora(str(lora_dir / file)), strength))
    golden = load_file(str(lora_dir / "outputs.safetensors"))[case]

    report = apply_loras(model, loras)
    try:
        assert all(not unmatched for unmatched in report.unmatched.values()), report.summary()
        touches_face = any(p.startswith(FACE_MODULES) for params in report.matched.values() for p in params)
        with torch.no_grad():
            motion_vec = (
                model.encode_face(inputs["face_u8"].float() / 127.5 - 1) if touches_face else golden_motion_vec
            )
            out = model(inputs["x"], inputs["t"], inputs["context"], inputs["clip_fea"], inputs["y"],
                        inputs["pose_latents"], motion_vec)
    finally:
        remove_loras(model, report)
    assert_close_golden(out, golden, TOLERANCE, f"{case} ({twin or 'as given'})")


def test_lora_golden_on_fp8_layers_equals_a_float_merge(golden_dit):
    """The golden DiT stored in fp8 with the stacked case applied gives what a float32 model holding the same
    dequantised weights gives with the LoRAs merged: the fp8 layers keep the delta exactly."""
    model, inputs, motion_vec, lora_dir = golden_dit
    case = "out_stack" if "out_stack" in _meta()["cases"] else next(iter(_meta()["cases"]))
    loras = [(load_lora(str(lora_dir / file)), strength) for file, strength in _meta()["cases"][case]]
    fp8_model = load_dit(str(golden_root() / "dit" / "weights.safetensors"), dtype=torch.float32,
                         storage_dtype=torch.float8_e4m3fn)
    fp8_layers = {name: module for name, module in fp8_model.named_modules() if isinstance(module, FP8Linear)}
    assert fp8_layers
    with torch.no_grad():
        originals = {name: model.get_submodule(name).weight.detach().clone() for name in fp8_layers}
        for name, layer in fp8_layers.items():
            model.get_submodule(name).weight.copy_(linear_weight(layer, torch.float32))
        fp8_report = apply_loras(fp8_model, loras)
        float_report = apply_loras(model, loras)
        try:
            args = (inputs["x"], inputs["t"], inputs["context"], inputs["clip_fea"], inputs["y"],
                    inputs["pose_latents"], motion_vec)
            ours, reference = fp8_model(*args), model(*args)
        finally:
            remove_loras(model, float_report)
            for name, weight in originals.items():
                model.get_submodule(name).weight.copy_(weight)
    assert fp8_report.quantised_entries
    assert_close_golden(ours, reference, 1e-5, f"{case} on fp8 layers")
