"""The step-distill schedules (LightX2V) and the stochastic samplers, each against its reference formula."""
from __future__ import annotations

import math

import pytest
import torch

from wan_animate.sampling.distill import distill_step_list
from wan_animate.sampling.schedulers import make_scheduler

X = torch.tensor([[1.0, 0.3, -0.7, -1.2]])


def _velocity(x: torch.Tensor, i: int) -> torch.Tensor:
    return torch.tanh(x - torch.tensor([0.5, -1.0, 2.0, 0.0])) * 1.3 + 0.1 * i


def _shifted(s: float, shift: float) -> float:
    return shift * s / (1 + (shift - 1) * s)


def test_four_step_distill_schedule_is_lightx2v_s():
    """LightX2V's 4-step configs: denoising_step_list [1000, 750, 500, 250], sample_shift 5, t = 1000 * sigma."""
    assert distill_step_list(4) == [1000, 750, 500, 250]
    assert distill_step_list(8) == [1000, 875, 750, 625, 500, 375, 250, 125]
    for name in ("lightx2v", "lightx2v_sde"):
        scheduler = make_scheduler(name, 4, 5.0)
        torch.testing.assert_close(scheduler.timesteps, torch.tensor([1000.0, 937.5, 2500 / 3, 625.0]))
        torch.testing.assert_close(scheduler.sigmas, torch.tensor([1.0, 0.9375, 5 / 6, 0.625, 0.0]))
    sigmas = make_scheduler("lightx2v", 6, 3.0).sigmas[:-1].double()
    expected = torch.tensor([_shifted(step / 1000, 3.0) for step in distill_step_list(6)], dtype=torch.float64)
    torch.testing.assert_close(sigmas, expected, atol=1e-7, rtol=0)


def test_lightx2v_steps_along_the_velocity():
    scheduler = make_scheduler("lightx2v", 4, 5.0)
    s = [1.0, 0.9375, 5 / 6, 0.625, 0.0]
    x, ref = X.clone(), X.double()
    for i in range(4):
        x = scheduler.step(_velocity(x, i), i, x)
        ref = ref + (s[i + 1] - s[i]) * _velocity(ref.float(), i).double()
    torch.testing.assert_close(x, ref.float(), atol=1e-6, rtol=0)


def test_lightx2v_sde_renoises_the_data_prediction():
    scheduler = make_scheduler("lightx2v_sde", 4, 5.0, seed=7)
    generator = torch.Generator().manual_seed(7)
    s = [1.0, 0.9375, 5 / 6, 0.625, 0.0]
    x, ref = X.clone(), X.double()
    for i in range(4):
        x = scheduler.step(_velocity(x, i), i, x)
        x0 = ref - s[i] * _velocity(ref.float(), i).double()
        ref = x0 if i == 3 else (1 - s[i + 1]) * x0 + s[i + 1] * torch.randn(X.shape, generator=generator).double()
    torch.testing.assert_close(x, ref.float(), atol=1e-5, rtol=0)


def test_euler_ancestral_is_the_rectified_flow_formula():
    """ComfyUI's euler_ancestral for flow models with eta 1: sigma_down = s'^2 / s, Euler step to sigma_down, then
    x = (1 - s') / (1 - sigma_down) * x + sqrt(s'^2 - sigma_down^2 (1 - s')^2 / (1 - sigma_down)^2) * noise."""
    steps, shift = 6, 5.0
    scheduler = make_scheduler("euler_a", steps, shift, seed=3)
    generator = torch.Generator().manual_seed(3)
    s = [_shifted(1 - k / steps, shift) for k in range(steps)] + [0.0]
    x, ref = X.clone(), X.double()
    for i in range(steps):
        x = scheduler.step(_velocity(x, i), i, x)
        denoised = ref - s[i] * _velocity(ref.float(), i).double()
        if s[i + 1] == 0:
            ref = denoised
            continue
        down = s[i + 1] ** 2 / s[i]
        renoise = math.sqrt(s[i + 1] ** 2 - down**2 * (1 - s[i + 1]) ** 2 / (1 - down) ** 2)
        stepped = down / s[i] * ref + (1 - down / s[i]) * denoised
        ref = (1 - s[i + 1]) / (1 - down) * stepped + renoise * torch.randn(X.shape, generator=generator).double()
    torch.testing.assert_close(x, ref.float(), atol=1e-5, rtol=0)


def test_euler_ancestral_samples_the_data_distribution():
    """Data ~ N(mu, c^2) with the exact velocity: ancestral samples from pure noise have mean mu and std c (up to the
    first-order discretisation error, which shrinks with the steps: std 0.71 at 20 steps, 0.79 at 320)."""
    mu, c = 0.7, 0.8

    def velocity(x: torch.Tensor, s: float) -> torch.Tensor:
        variance = (1 - s) ** 2 * c**2 + s**2
        return (x - (mu + (1 - s) * c**2 / variance * (x - (1 - s) * mu))) / s

    scheduler = make_scheduler("euler_a", 320, 1.0, seed=0)
    x = torch.randn(20000, generator=torch.Generator().manual_seed(1))
    for i in range(scheduler.steps):
        x = scheduler.step(velocity(x, scheduler.sigmas[i].item()), i, x)
    assert abs(x.mean().item() - mu) < 0.02 and abs(x.std().item() - c) < 0.02


@pytest.mark.parametrize("name", ["euler_a", "lightx2v_sde"])
def test_stochastic_samplers_follow_their_seed(name):
    def run(seed: int) -> torch.Tensor:
        scheduler = make_scheduler(name, 4, 5.0, seed=seed)
        x = X.clone()
        for i in range(4):
            x = scheduler.step(_velocity(x, i), i, x)
        return x

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
