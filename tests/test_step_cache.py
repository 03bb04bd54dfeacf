"""Step caching: when calls are skipped, what a skipped call returns, per-branch counting, and that off is exact."""
from __future__ import annotations

import pytest
import torch

from helpers_dit import build_tiny_dit, tiny_config
from helpers_vae import random_vae
from wan_animate.model.vae_config import VAEConfig
from wan_animate.pipeline.generate import AnimateInputs, GenerationSettings, generate
from wan_animate.sampling.step_cache import StepCache


def _drive(cache: StepCache, inputs: list[torch.Tensor], model) -> tuple[list[torch.Tensor], list[int]]:
    """Feed `inputs` through `cache`; the outputs and the indices of the calls that computed."""
    computed, outputs = [], []
    for index, x in enumerate(inputs):
        outputs.append(cache(x, lambda x=x, index=index: computed.append(index) or model(x)))
    return outputs, computed


def _slow_inputs(n: int) -> list[torch.Tensor]:
    base = torch.linspace(-1, 1, 64)
    return [base * (1 - 0.01 * i) for i in range(n)]


def test_threshold_zero_computes_every_call():
    outputs, computed = _drive(StepCache(0.0, 8), _slow_inputs(8), lambda x: 2 * x + 1)
    assert computed == list(range(8))
    assert all(torch.equal(o, 2 * x + 1) for o, x in zip(outputs, _slow_inputs(8)))


def test_reuse_follows_the_predicted_change_and_returns_the_cached_transformation():
    """v = 2x + 1: k = 2; each step changes x by ~1% of |x|, so the predicted relative change per step is about
    2 * 0.01 |x| / |2x + 1|, accumulated until it passes the threshold."""
    inputs = _slow_inputs(10)
    cache = StepCache(0.05, 10)
    outputs, computed = _drive(cache, inputs, lambda x: 2 * x + 1)
    assert computed[:2] == [0, 1] and computed[-1] == 9  # warm-up and the last call are computed
    skipped = [i for i in range(10) if i not in computed]
    assert skipped and cache.reused == len(skipped) and cache.calls == 10
    for i in skipped:
        last = max(c for c in computed if c < i)
        expected = inputs[i] + (2 * inputs[last] + 1 - inputs[last])  # x + (v_last - x_last)
        torch.testing.assert_close(outputs[i], expected)
    # the accumulated prediction resets after each computed call: never more than the threshold allows in a row
    rate, scale = 2.0, torch.linalg.vector_norm(2 * inputs[1] + 1).item()
    per_step = rate * torch.linalg.vector_norm(inputs[1] - inputs[0]).item() / scale
    longest = max(len(list(g)) for g in _runs(skipped))
    assert longest <= int(0.05 / per_step) + 1


def _runs(indices: list[int]):
    run = [indices[0]]
    for i in indices[1:]:
        if i == run[-1] + 1:
            run.append(i)
        else:
            yield run
            run = [i]
    yield run


def test_higher_threshold_skips_more_and_bad_threshold_is_named():
    inputs = _slow_inputs(20)
    counts = []
    for threshold in (0.02, 0.1, 0.5):
        cache = StepCache(threshold, 20)
        _drive(cache, inputs, lambda x: torch.sin(3 * x))
        counts.append(cache.reused)
    assert counts[0] <= counts[1] <= counts[2] and counts[2] > counts[0]
    with pytest.raises(ValueError, match="cache threshold"):
        StepCache(-0.1, 4)


# ----- through generate() on tiny random models -----

CONFIG = tiny_config()
HEIGHT, WIDTH = 32, 48


class SmoothDiT:
    """A stand-in DiT whose velocity changes slowly with the latents (random tiny DiTs are far too chaotic for any
    step to be skipped), counting its calls."""

    def __init__(self, dit):
        self.dit, self.calls = dit, 0

    def encode_face(self, face):
        return self.dit.encode_face(face)

    def __call__(self, x, t, context, clip_fea, y, pose_latents, motion_vec):
        self.calls += 1
        return 0.3 * torch.tanh(x) + 0.2 * y[:16] + context.mean() + t / 1000


def _inputs(frames: int) -> AnimateInputs:
    g = torch.Generator().manual_seed(0)
    face = CONFIG.face_size
    return AnimateInputs(
        reference=torch.rand(HEIGHT, WIDTH, 3, generator=g),
        pose=torch.randint(0, 256, (frames, HEIGHT, WIDTH, 3), generator=g, dtype=torch.uint8),
        face=torch.rand(frames, face, face, 3, generator=g),
        context=torch.randn(5, CONFIG.text_dim, generator=g),
        context_null=torch.randn(3, CONFIG.text_dim, generator=g),
        clip_fea=torch.randn(1, 257, CONFIG.clip_dim, generator=g),
    )


def test_generate_with_caching_off_is_exact_and_on_skips_calls():
    dit = build_tiny_dit(seed=0, config=CONFIG)
    vae = random_vae(VAEConfig(dim=4, z_dim=16, dim_mult=(1, 1, 1, 1), num_res_blocks=1, attn_scales=(),
                               temperal_downsample=(False, True, True)))
    base = dict(mode="animate", clip_len=5, refert_num=1, solver="dpm++", steps=10, shift=5.0, seed=3,
                guide_scale=2.0)
    assert torch.equal(generate(dit, vae, _inputs(5), GenerationSettings(**base, cache_threshold=0.0)),
                       generate(dit, vae, _inputs(5), GenerationSettings(**base)))
    plain = SmoothDiT(dit)
    reference = generate(plain, vae, _inputs(5), GenerationSettings(**base))
    assert plain.calls == 20  # 10 steps x 2 guidance branches
    cached, trace = SmoothDiT(dit), {}
    video = generate(cached, vae, _inputs(5), GenerationSettings(**base, cache_threshold=0.1), trace=trace)
    assert 0 < trace["cache_reused_0"] == 20 - cached.calls
    difference = (video - reference).abs()
    assert 0 < difference.mean() < 0.05 * reference.abs().mean() and difference.max() < 0.3


# ----- per-step conditioning (branch strength windows) -----

def test_a_changed_condition_is_computed_and_measures_the_rate_afresh():
    """Inputs that would be skipped from call 2 on; the condition changes at call 5: calls 5 and 6 are computed (6
    measures the rate under the new condition), later ones reuse the transformation computed under it."""
    inputs = _slow_inputs(10)
    conditions = [(1.0, 1.0)] * 5 + [(0.0, 1.0)] * 5
    computed, outputs = [], []
    cache = StepCache(1e9, 10)
    for index, (x, condition) in enumerate(zip(inputs, conditions)):
        model = (lambda x, c=condition: x + 3 * c[0])  # the condition shifts the output
        outputs.append(cache(x, lambda x=x, m=model, i=index: computed.append(i) or m(x), condition=condition))
    assert computed == [0, 1, 5, 6, 9]
    for index, (x, condition) in enumerate(zip(inputs, conditions)):
        torch.testing.assert_close(outputs[index], x + 3 * condition[0], rtol=0, atol=1e-5)


class AffineDiT:
    """v = x + a constant per (pose, face) strength: reusing a transformation computed under the same strengths is
    exact, so a cached run equals the uncached one unless it reused across a strength change. Records the
    (timestep, pose strength) of every call."""

    def __init__(self, dit):
        self.dit, self.calls = dit, []

    def encode_face(self, face):
        return self.dit.encode_face(face)

    def __call__(self, x, t, context, clip_fea, y, pose_latents, motion_vec, pose_strength=1.0, face_strength=1.0):
        self.calls.append((int(t), pose_strength))
        return x + 0.5 * pose_strength + 0.25 * face_strength


def test_generate_computes_the_step_where_a_strength_window_ends():
    dit = build_tiny_dit(seed=0, config=CONFIG)
    vae = random_vae(VAEConfig(dim=4, z_dim=16, dim_mult=(1, 1, 1, 1), num_res_blocks=1, attn_scales=(),
                               temperal_downsample=(False, True, True)))
    base = dict(mode="animate", clip_len=5, refert_num=1, solver="euler", steps=10, shift=5.0, seed=3,
                pose_end=0.5)  # pose strength 1 in steps 0-4, 0 from step 5 on
    plain = AffineDiT(dit)
    reference = generate(plain, vae, _inputs(5), GenerationSettings(**base))
    timesteps = [t for t, _ in plain.calls]
    cached = AffineDiT(dit)
    video = generate(cached, vae, _inputs(5), GenerationSettings(**base, cache_threshold=1e9))
    # every call the cache allows is skipped, except the window's end (step 5) and the next (measuring the rate)
    assert cached.calls == [(timesteps[i], 1.0 if i < 5 else 0.0) for i in (0, 1, 5, 6, 9)]
    torch.testing.assert_close(video, reference, rtol=0, atol=1e-4)
