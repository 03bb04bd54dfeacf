"""The sampler node's progress reporting: one ComfyUI progress bar per job, previews only under ComfyUI's setting."""
from __future__ import annotations

import enum
import types

import torch

from nodes import comfy_compat, generation


class _Method(enum.Enum):  # the shape of ComfyUI's LatentPreviewMethod
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"


def _recording_bars(monkeypatch) -> list[list]:
    bars = []

    def make_bar(total):
        calls = []
        bars.append(calls)
        return lambda step, preview=None: calls.append((step, total, preview))

    monkeypatch.setattr(generation, "progress_callback", make_bar)
    return bars


def test_one_bar_for_the_whole_job(monkeypatch):
    bars = _recording_bars(monkeypatch)
    on_step = generation._progress_bar(None)
    x0 = torch.zeros(16, 3, 4, 4)
    for step in range(1, 13):  # 3 segments of 4 steps
        on_step(step, 12, x0)
    assert len(bars) == 1
    assert [call[0] for call in bars[0]] == list(range(1, 13)) and {call[1] for call in bars[0]} == {12}


def test_previews_follow_the_preview_setting(monkeypatch):
    bars = _recording_bars(monkeypatch)
    x0 = torch.randn(16, 3, 4, 6)
    generation._progress_bar(None)(1, 2, x0)
    generation._progress_bar(256)(1, 2, x0)
    assert bars[0][0][2] is None
    kind, image, side = bars[1][0][2]
    assert kind == "JPEG" and side == 256 and image.size == (6, 4)


def test_preview_side_reads_comfyui_args(monkeypatch):
    monkeypatch.setattr(comfy_compat, "comfy_args", None)
    assert comfy_compat.preview_max_side() is None  # outside ComfyUI: no previews
    args = types.SimpleNamespace(preview_method=_Method.NoPreviews, preview_size=512)
    monkeypatch.setattr(comfy_compat, "comfy_args", args)
    assert comfy_compat.preview_max_side() is None
    args.preview_method, args.preview_size = _Method.Auto, 384
    assert comfy_compat.preview_max_side() == 384
    args.preview_method = _Method.Latent2RGB
    assert comfy_compat.preview_max_side() == 384
