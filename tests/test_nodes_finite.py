"""NaN and infinity never reach the pipeline: ComfyUI's /prompt accepts JSON NaN (it passes min / max), so every FLOAT
input and every tensor input of every node of the pack is checked, with an error naming the input. The tests iterate
over NODE_CLASS_MAPPINGS, so a node added later is covered without a new test."""
from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
from conftest import PACK_MODULE
from safetensors.torch import save_file

from wan_animate.preprocess.masks import blur_mask

NON_FINITE = (math.nan, math.inf, -math.inf)
TENSOR_TYPES = ("IMAGE", "MASK", "CONDITIONING", "CLIP_VISION_OUTPUT", "AUDIO")


def node_inputs(pack, kinds: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(node, input, type) for every input of every registered node whose type is one of `kinds`."""
    found = []
    for node, cls in sorted(pack.NODE_CLASS_MAPPINGS.items()):
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                if entry[0] in kinds:
                    found.append((node, name, entry[0]))
    return found


def call_with(pack, node: str, **given):
    """Run a node's FUNCTION with `given` and None for every other input (the check must fire before any use)."""
    cls = pack.NODE_CLASS_MAPPINGS[node]
    spec = cls.INPUT_TYPES()
    inputs = {name: None for name in spec.get("required", {})}
    return getattr(cls(), cls.FUNCTION)(**{**inputs, **given})


def poisoned(kind: str, value: float):
    tensor = torch.zeros(2, 16, 16, 3) if kind == "IMAGE" else torch.zeros(2, 16, 16)
    if kind == "CONDITIONING":
        tensor = torch.zeros(1, 7, 4096)
    elif kind == "CLIP_VISION_OUTPUT":
        tensor = torch.zeros(1, 257, 1280)
    elif kind == "AUDIO":
        tensor = torch.zeros(1, 2, 4800)
    tensor.view(-1)[tensor.numel() // 2] = value  # one bad element in the middle
    if kind == "CONDITIONING":
        return [[tensor, {}]]
    if kind == "CLIP_VISION_OUTPUT":
        return type("Output", (), {"penultimate_hidden_states": tensor})()
    if kind == "AUDIO":
        return {"waveform": tensor, "sample_rate": 48000}
    return tensor


def test_every_float_input_of_every_node_rejects_nan_and_infinity(pack):
    floats = node_inputs(pack, ("FLOAT",))
    names = {name for _, name, _ in floats}
    assert {"shift", "cfg", "face_cfg", "strength", "smoothing", "mask_blur", "blur"} <= names
    for node, name, _ in floats:
        for value in NON_FINITE:
            with pytest.raises(ValueError, match=rf"^{name} is {value}; expected a finite number"):
                call_with(pack, node, **{name: value})


def test_every_tensor_input_of_every_node_rejects_nan_and_infinity(pack):
    tensors = node_inputs(pack, TENSOR_TYPES)
    assert {kind for *_, kind in tensors} == set(TENSOR_TYPES)
    for node, name, kind in tensors:
        for value in NON_FINITE:
            with pytest.raises(ValueError, match=rf"^{name} holds NaN or infinite values; expected a finite {kind}"):
                call_with(pack, node, **{name: poisoned(kind, value)})


def test_finite_inputs_pass_the_check_to_the_node(pack):
    """The guard lets finite values through: the node's own check answers (here: the mask / image size mismatch)."""
    images = torch.rand(2, 16, 16, 3)
    with pytest.raises(ValueError, match=r"mask is \(2, 8, 8\); expected \(2, 16, 16\)"):
        call_with(pack, "WanAnimateMaskAdjust", images=images, mask=torch.rand(2, 8, 8), grow=0, blur=1.5)
    background, mask = call_with(pack, "WanAnimateMaskAdjust", images=images, mask=torch.ones(2, 16, 16), grow=0,
                                 blur=0.0)["result"]
    assert float(background.abs().max()) == 0.0 and float(mask.min()) == 1.0


def test_positional_calls_are_checked_too(pack):
    cls = pack.NODE_CLASS_MAPPINGS["WanAnimateMaskAdjust"]
    with pytest.raises(ValueError, match="^blur is nan"):
        cls().adjust(torch.rand(1, 16, 16, 3), torch.ones(1, 16, 16), 0, math.nan)


def test_mask_blur_nan_in_the_library_has_a_clear_message():
    with pytest.raises(ValueError, match="blur radius must be a finite number >= 0; got nan"):
        blur_mask(np.ones((1, 8, 8), np.float32), math.nan)


def test_embeddings_file_with_nan_names_the_file_and_tensor(pack, tmp_path, monkeypatch):
    monkeypatch.setenv("WAN_ANIMATE_INPUT_DIR", str(tmp_path))
    context = torch.zeros(7, 4096)
    context[3, 5] = math.nan
    save_file({"context": context, "clip_fea": torch.zeros(1, 257, 1280)}, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ValueError, match=r"file 'nan.safetensors': context holds NaN or infinite values"):
        call_with(pack, "WanAnimateLoadEmbeddings", file="nan.safetensors")


def test_all_finite_in_slices(pack, monkeypatch):
    checks = importlib.import_module(f"{PACK_MODULE}.nodes.checks")
    monkeypatch.setattr(checks, "FINITE_CHECK_CHUNK", 10)
    frames = torch.zeros(20, 4, 4, 3)[..., :2]  # non-contiguous, several slices
    assert checks.all_finite(frames) and checks.all_finite(torch.zeros(3, dtype=torch.int64))
    assert checks.all_finite(torch.tensor(1.0))
    frames[17, 3, 3, 1] = math.inf
    assert not checks.all_finite(frames) and not checks.all_finite(torch.tensor(math.nan))
