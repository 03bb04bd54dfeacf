"""generate() end to end with tiny random models: frame counts, chaining, determinism, progress, interrupt, resume,
colour correction and input checks."""
from __future__ import annotations

import re

import pytest
import torch

from helpers_dit import build_tiny_dit, tiny_config
from helpers_vae import random_vae
from wan_animate.model.dit import WanAnimateDiT
from wan_animate.model.vae_config import VAEConfig
from wan_animate.pipeline.color import colour_drift
from wan_animate.pipeline.generate import AnimateInputs, GenerationSettings, generate, video_to_image

HEIGHT, WIDTH = 32, 48
CONFIG = tiny_config()
FACE = CONFIG.face_size


@pytest.fixture(scope="module")
def dit() -> WanAnimateDiT:
    return build_tiny_dit(seed=0, config=CONFIG)


@pytest.fixture(scope="module")
def vae():
    return random_vae(VAEConfig(dim=4, z_dim=16, dim_mult=(1, 1, 1, 1), num_res_blocks=1, attn_scales=(),
                                temperal_downsample=(False, True, True)))


def make_inputs(frames: int, mode: str = "animate", seed: int = 0) -> AnimateInputs:
    g = torch.Generator().manual_seed(seed)
    replace = mode == "replace"
    mask = torch.zeros(frames, HEIGHT, WIDTH)
    mask[:, 8:24, 16:32] = 1
    return AnimateInputs(
        reference=torch.rand(HEIGHT, WIDTH, 3, generator=g),
        pose=torch.randint(0, 256, (frames, HEIGHT, WIDTH, 3), generator=g, dtype=torch.uint8),
        face=torch.rand(frames, FACE, FACE, 3, generator=g),
        context=torch.randn(5, CONFIG.text_dim, generator=g),
        context_null=torch.randn(3, CONFIG.text_dim, generator=g),
        clip_fea=torch.randn(1, 257, CONFIG.clip_dim, generator=g),
        background=torch.rand(frames, HEIGHT, WIDTH, 3, generator=g) if replace else None,
        person_mask=mask if replace else None,
    )


def settings(**overrides) -> GenerationSettings:
    base = dict(mode="animate", clip_len=5, refert_num=1, solver="dpm++", steps=2, shift=5.0, seed=3)
    base.update(overrides)
    return GenerationSettings(**base)


class CountingDiT:
    """Wraps a DiT, counting model calls (and optionally failing on one)."""

    def __init__(self, dit, fail_at_call: int | None = None):
        self.dit, self.calls, self.fail_at_call = dit, 0, fail_at_call
        self.faces: list[float] = []  # mean pixel of every face video encoded

    def encode_face(self, face):
        self.faces.append(face.mean().item())
        return self.dit.encode_face(face)

    def __call__(self, *args):
        self.calls += 1
        if self.fail_at_call is not None and self.calls == self.fail_at_call:
            raise KeyboardInterrupt("stopped by the test")
        return self.dit(*args)


@pytest.mark.parametrize("mode,solver,guide", [("animate", "dpm++", 1.0), ("replace", "unipc", 2.0)])
def test_modes_give_exact_frames_and_size(dit, vae, mode, solver, guide):
    inputs = make_inputs(7, mode)
    video = generate(dit, vae, inputs, settings(mode=mode, solver=solver, guide_scale=guide))
    assert video.shape == (3, 7, HEIGHT, WIDTH)
    assert torch.isfinite(video).all() and video.abs().max() <= 1
    image = video_to_image(video)
    assert image.shape == (7, HEIGHT, WIDTH, 3) and 0 <= image.min() and image.max() <= 1


@pytest.mark.parametrize("clip_len,refert,frames", [(5, 1, 13), (9, 5, 17)])
def test_chaining_three_segments(dit, vae, clip_len, refert, frames):
    trace: dict = {}
    video = generate(dit, vae, make_inputs(frames), settings(clip_len=clip_len, refert_num=refert), trace=trace)
    assert video.shape[1] == frames
    assert "decoded_2" in trace and "decoded_3" not in trace
    for k in (1, 2):
        assert torch.equal(trace[f"guide_{k}"], trace[f"decoded_{k - 1}"][:, -refert:])
        guided_latents = 1 if refert == 1 else 2
        assert torch.all(trace[f"y_{k}"][:4, 1 : 1 + guided_latents] == 1)
        assert torch.all(trace[f"y_{k}"][:4, 1 + guided_latents :] == 0)
    assert torch.all(trace["y_0"][:4, 0] == 1) and torch.all(trace["y_0"][:4, 1:] == 0)
    expected = torch.cat([trace["decoded_0"]] + [trace[f"decoded_{k}"][:, refert:] for k in (1, 2)], dim=1)
    assert torch.equal(video, expected[:, :frames])


def test_seeded_runs_are_deterministic_and_noise_can_be_given(dit, vae):
    inputs = make_inputs(7)
    first = generate(dit, vae, inputs, settings(seed=11))
    assert torch.equal(first, generate(dit, vae, inputs, settings(seed=11)))
    assert not torch.allclose(first, generate(dit, vae, inputs, settings(seed=12)))

    shapes = []
    g = torch.Generator().manual_seed(11)

    def noise(index, shape):
        shapes.append((index, shape))
        return torch.randn(shape, generator=g)

    assert torch.equal(first, generate(dit, vae, inputs, settings(seed=99), noise=noise))
    assert shapes == [(k, (16, 3, HEIGHT // 8, WIDTH // 8)) for k in (0, 1)]  # 7 frames: two segments of 5


def test_progress_callback_once_per_step(dit, vae):
    seen = []
    generate(dit, vae, make_inputs(9), settings(steps=3), callback=lambda s, n, p: seen.append((s, n, p.shape)))
    assert [s for s, _, _ in seen] == list(range(1, 7))
    assert all(n == 6 and shape == (16, 3, HEIGHT // 8, WIDTH // 8) for _, n, shape in seen)


def test_interrupt_stops_within_one_step(dit, vae):
    model = CountingDiT(dit)
    checks = []

    def interrupt():
        checks.append(model.calls)
        if len(checks) == 3:
            raise KeyboardInterrupt("user pressed cancel")

    with pytest.raises(KeyboardInterrupt):
        generate(model, vae, make_inputs(9), settings(steps=4), interrupt=interrupt)
    assert model.calls == 2 and checks == [0, 1, 2]


def test_resume_equals_uninterrupted(dit, vae, tmp_path):
    inputs, job = make_inputs(13), settings(resume_dir=str(tmp_path))
    uninterrupted = generate(dit, vae, inputs, settings())
    steps = job.steps
    with pytest.raises(KeyboardInterrupt):  # dies during segment 2 of 3
        generate(CountingDiT(dit, fail_at_call=2 * steps + 1), vae, inputs, job)
    model = CountingDiT(dit)
    resumed = generate(model, vae, inputs, job)
    assert model.calls == steps  # only the last segment ran again
    assert torch.equal(resumed, uninterrupted)

    other = CountingDiT(dit)  # other settings: a different job, nothing reused
    generate(other, vae, inputs, settings(resume_dir=str(tmp_path), seed=4))
    assert other.calls == 3 * steps


class DriftingVAE:
    """A VAE whose every decode comes out brighter than the last: synthetic colour drift."""

    def __init__(self, vae):
        self.vae, self.decodes = vae, 0

    def encode(self, video):
        return self.vae.encode(video)

    def decode(self, latents):
        self.decodes += 1
        return (self.vae.decode(latents) * 0.5 + 0.15 * self.decodes).clamp(-1, 1)


def test_colour_correction_reduces_drift(dit, vae):
    inputs = make_inputs(13)
    drifts = {}
    for correct in (False, True):
        trace: dict = {}
        generate(dit, DriftingVAE(vae), inputs, settings(colour_correction=correct), trace=trace)
        drifts[correct] = max(colour_drift(trace[f"guide_{k}"], trace[f"decoded_{k}"][:, :1]) for k in (1, 2))
    assert drifts[False] > 0.1
    assert drifts[True] < 0.1 * drifts[False]


def test_bad_inputs_are_named(dit, vae):
    inputs = make_inputs(7)
    with pytest.raises(ValueError, match="background"):
        generate(dit, vae, inputs, settings(mode="replace"))
    inputs.face = inputs.face[:5]
    with pytest.raises(ValueError, match="face"):
        generate(dit, vae, inputs, settings())
    inputs = make_inputs(7)
    inputs.context_null = None
    with pytest.raises(ValueError, match="context_null"):
        generate(dit, vae, inputs, settings(guide_scale=3.0))
    with pytest.raises(ValueError, match="solver"):
        generate(dit, vae, make_inputs(7), settings(solver="heun"))


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("field,value,expected", [
    ("shift", NAN, "shift is nan; expected a number above 0"),
    ("shift", INF, "shift is inf; expected a number above 0"),
    ("shift", 0.0, "shift is 0.0; expected a number above 0"),
    ("guide_scale", NAN, r"guide_scale \(cfg\) is nan; expected a finite number"),
    ("guide_scale", -INF, r"guide_scale \(cfg\) is -inf; expected a finite number"),
    ("face_guide_scale", INF, r"face_guide_scale \(face_cfg\) is inf; expected 0 or more"),
    ("face_guide_scale", NAN, r"face_guide_scale \(face_cfg\) is nan; expected 0 or more"),
    ("cache_threshold", INF, "cache_threshold is inf; expected 0 \\(off\\) or a positive fraction"),
    ("colour_strength", NAN, "colour_strength is nan; expected 0 to 1"),
    ("pose_strength", NAN, "pose_strength is nan; expected 0 to 2"),
    ("face_start", NAN, "face_start is nan; expected a fraction 0 to 1"),
    ("pose_end", INF, "pose_end is inf; expected a fraction 0 to 1"),
    ("steps", NAN, "steps is nan; expected a whole number of at least 1"),
    ("steps", 2.5, "steps is 2.5; expected a whole number of at least 1"),
    ("seed", INF, "seed is inf; expected a whole number"),
    ("frame_offset", NAN, "frame_offset is nan; expected a whole number of 0 or more"),
])
def test_non_finite_settings_are_refused_with_name_range_and_value(field, value, expected):
    with pytest.raises(ValueError, match=f"^{expected}"):
        settings(**{field: value}).validate()


def test_the_library_api_refuses_a_non_finite_cfg_before_reading_any_file(tmp_path):
    from wan_animate.api import animate_files

    missing = tmp_path / "not_read"  # the settings are checked first: no file is opened
    with pytest.raises(ValueError, match=r"^guide_scale \(cfg\) is nan; expected a finite number"):
        animate_files(missing / "a.png", missing / "b.mp4", missing / "c.safetensors", missing / "dit", missing / "vae",
                      missing / "det", missing / "pose", tmp_path / "out.mp4", cfg=NAN)
    with pytest.raises(ValueError, match="^steps is nan; expected a whole number of at least 1"):
        animate_files(missing / "a.png", missing / "b.mp4", missing / "c.safetensors", missing / "dit", missing / "vae",
                      missing / "det", missing / "pose", tmp_path / "out.mp4", steps=NAN)



@pytest.mark.parametrize("argument,value,expected", [
    ("fps", NAN, "fps is nan; expected a frame rate above 0, or -1 to keep the driving video's rate"),
    ("fps", INF, "fps is inf; expected a frame rate above 0"),
    ("fps", 0, "fps is 0; expected a frame rate above 0"),
    ("fps", "30", "fps is '30'; expected a frame rate above 0"),
    ("width", NAN, "width is nan; expected a whole number of at least 16"),
    ("width", 1280.5, "width is 1280.5; expected a whole number of at least 16"),
    ("height", 0, "height is 0; expected a whole number of at least 16"),
    ("height", -720, "height is -720; expected a whole number of at least 16"),
])
def test_the_library_api_refuses_a_bad_fps_or_size_before_reading_any_file(tmp_path, monkeypatch, argument, value,
                                                                            expected):
    from wan_animate import api

    def no_reading(*args, **kwargs):
        raise AssertionError("a file was read before the arguments were checked")

    for reader in ("read_embeddings", "read_image", "read_video"):
        monkeypatch.setattr(api, reader, no_reading)
    missing = tmp_path / "not_read"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}"):
        api.animate_files(missing / "a.png", missing / "b.mp4", missing / "c.safetensors", missing / "dit",
                          missing / "vae", missing / "det", missing / "pose", tmp_path / "out.mp4",
                          **{argument: value})

@pytest.mark.parametrize("guide,face_guide,passes", [(2.0, 1.0, 2), (1.0, 3.0, 2), (2.0, 3.0, 3)])
def test_guidance_passes_and_black_face_once(dit, vae, guide, face_guide, passes):
    model = CountingDiT(dit)
    video = generate(model, vae, make_inputs(9), settings(guide_scale=guide, face_guide_scale=face_guide))
    assert model.calls == passes * 2 * 2  # passes per step, 2 steps, 2 segments
    assert model.faces.count(-1.0) == 1 and len(model.faces) == 3  # black face once per job, the real one per segment
    assert not torch.allclose(video, generate(dit, vae, make_inputs(9), settings()))
