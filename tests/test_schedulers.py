"""Flow-matching schedulers: schedules, exactness on a linear flow, convergence order, golden timesteps."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_section
from wan_animate.sampling.schedulers import SCHEDULERS, make_scheduler

NAMES = sorted(SCHEDULERS)


def _shifted(s: float, shift: float) -> float:
    return shift * s / (1 + (shift - 1) * s)


@pytest.mark.parametrize("steps", [1, 4, 20, 37])
@pytest.mark.parametrize("shift", [1.0, 5.0, 8.0])
def test_dpm_and_euler_sigmas_follow_the_published_formula(steps, shift):
    expected = [_shifted(1 - k / steps, shift) for k in range(steps)]
    for name in ("dpm++", "euler"):
        scheduler = make_scheduler(name, steps, shift)
        assert scheduler.sigmas.shape == (steps + 1,)
        assert scheduler.sigmas[-1].item() == 0.0
        assert torch.allclose(scheduler.sigmas[:-1].double(), torch.tensor(expected, dtype=torch.float64), atol=1e-7)
        _assert_truncated(scheduler.timesteps, expected)


@pytest.mark.parametrize("steps", [1, 4, 20, 37])
@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_unipc_sigmas_start_from_the_training_grid_top(steps, shift):
    top = 0.999000012874603271484375  # float32(1 - 1/1000)
    expected = [_shifted(top * (1 - k / steps), shift) for k in range(steps)]
    scheduler = make_scheduler("unipc", steps, shift)
    assert torch.allclose(scheduler.sigmas[:-1].double(), torch.tensor(expected, dtype=torch.float64), atol=1e-7)
    assert scheduler.sigmas[-1].item() == 0.0
    assert scheduler.timesteps[0].item() == 999.0
    _assert_truncated(scheduler.timesteps, expected)


def _assert_truncated(timesteps: torch.Tensor, sigmas: list[float]) -> None:
    """Timesteps are 1000 * sigma truncated to an integer (up to float64 round-off at exact integers)."""
    assert torch.equal(timesteps, timesteps.floor())
    gaps = [1000 * s - t for s, t in zip(sigmas, timesteps.tolist())]
    assert all(-1e-6 < gap < 1 + 1e-6 for gap in gaps), gaps


def test_first_timesteps_of_the_official_solvers_differ():
    """Values printed by the official Wan2.2 schedulers (animate.py's set-up of each) for 20 steps, shift 5."""
    assert make_scheduler("dpm++", 20, 5.0).timesteps[:3].tolist() == [1000.0, 989.0, 978.0]
    assert make_scheduler("unipc", 20, 5.0).timesteps[:3].tolist() == [999.0, 989.0, 978.0]


# Final samples printed by the official Wan2.2 FlowDPMSolverMultistepScheduler / FlowUniPCMultistepScheduler (set up
# as wan/animate.py does, shift 5) for x = [1, 0.3, -0.7, -1.2] and velocity tanh(x - [0.5, -1, 2, 0]) * 1.3 + 0.1 i.
OFFICIAL_FINAL_SAMPLES = {
    ("dpm++", 6): [0.294495, -0.977362, 0.159129, -0.663294],
    ("dpm++", 20): [-0.321559, -1.557421, -0.905511, -1.588826],
    ("unipc", 6): [0.294633, -0.977859, 0.153315, -0.667516],
    ("unipc", 20): [-0.3206, -1.555348, -0.903843, -1.58687],
}


@pytest.mark.parametrize("name,steps", sorted(OFFICIAL_FINAL_SAMPLES))
def test_updates_reproduce_the_official_schedulers(name, steps):
    scheduler = make_scheduler(name, steps, 5.0)
    target = torch.tensor([0.5, -1.0, 2.0, 0.0])
    x = torch.tensor([[1.0, 0.3, -0.7, -1.2]])
    for i in range(steps):
        x = scheduler.step(torch.tanh(x - target) * 1.3 + 0.1 * i, i, x)
    torch.testing.assert_close(x[0], torch.tensor(OFFICIAL_FINAL_SAMPLES[name, steps]), atol=2e-6, rtol=0)


def _run(scheduler, velocity, x: torch.Tensor) -> torch.Tensor:
    for i in range(scheduler.steps):
        x = scheduler.step(velocity(x, scheduler.sigmas[i].double().item()), i, x)
    return x


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("steps", [1, 2, 3, 7])
def test_linear_flow_lands_exactly_on_the_data(name, steps):
    """For one data point x0 the exact velocity at (x, s) is (x - x0) / s; every solver must reach x0 exactly."""
    g = torch.Generator().manual_seed(steps)
    x0 = torch.randn(2, 16, 3, 4, 4, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    scheduler = make_scheduler(name, steps, 5.0)
    s0 = scheduler.sigmas[0].item()
    out = _run(scheduler, lambda x, s: (x - x0) / s, (1 - s0) * x0 + s0 * noise)
    assert (out - x0).abs().max().item() < 2e-6


def _gaussian_flow_error(name: str, steps: int, mu: float = 0.7, c: float = 0.8) -> float:
    """Data ~ N(mu, c^2): the exact velocity is nonlinear in s and the ODE maps noise z to mu + c z exactly."""

    def velocity(x: torch.Tensor, s: float) -> torch.Tensor:
        variance = (1 - s) ** 2 * c**2 + s**2
        posterior_mean = mu + (1 - s) * c**2 / variance * (x - (1 - s) * mu)
        return (x - posterior_mean) / s

    scheduler = make_scheduler(name, steps, 1.0)
    z = torch.randn(512, generator=torch.Generator().manual_seed(0))
    s0 = scheduler.sigmas[0].double().item()
    x = (1 - s0) * mu + math.sqrt((1 - s0) ** 2 * c**2 + s0**2) * z
    return (_run(scheduler, velocity, x) - (mu + c * z)).abs().max().item()


@pytest.mark.parametrize("name,lo,hi", [("euler", 1.8, 2.2), ("dpm++", 3.0, 5.0), ("unipc", 3.0, 5.0)])
def test_convergence_order_on_a_nonlinear_flow(name, lo, hi):
    """Doubling the steps divides the error by ~2 (Euler) or ~4 (second-order DPM++ and UniPC)."""
    errors = [_gaussian_flow_error(name, n) for n in (80, 160, 320)]
    for coarse, fine in zip(errors, errors[1:]):
        assert lo < coarse / fine < hi, f"{name}: errors {errors}"


def test_second_order_solvers_beat_euler():
    euler = _gaussian_flow_error("euler", 160)
    assert _gaussian_flow_error("dpm++", 160) < euler / 10
    assert _gaussian_flow_error("unipc", 160) < euler / 10


@pytest.mark.parametrize("name", NAMES)
def test_steps_must_run_in_order_and_reset_restarts(name):
    scheduler = make_scheduler(name, 4, 5.0)
    x = torch.randn(1, 4, 2, 2, 2)
    with pytest.raises(ValueError, match="out of order"):
        scheduler.step(torch.zeros_like(x), 1, x)
    first = scheduler.step(x * 0.5, 0, x)
    scheduler.step(x * 0.25, 1, first)
    scheduler.reset()
    assert torch.equal(scheduler.step(x * 0.5, 0, x), first)


@pytest.mark.parametrize("name", NAMES)
def test_sample_dtype_is_kept(name):
    scheduler = make_scheduler(name, 3, 5.0)
    x = torch.randn(1, 4, 2, 2, 2).to(torch.bfloat16)
    assert scheduler.step(torch.randn_like(x), 0, x).dtype == torch.bfloat16


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="scheduler must be one of"):
        make_scheduler("ddim", 4, 5.0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        make_scheduler("dpm++", 0, 5.0)
    with pytest.raises(ValueError, match="shift must be positive"):
        make_scheduler("unipc", 4, 0.0)


def _pipeline_cases():
    root = golden_section("pipeline")
    cases = sorted(p for p in root.iterdir() if (p / "meta.json").is_file())
    if not cases:
        pytest.skip(f"no pipeline case folders in {root}")
    return cases


def test_golden_pipeline_timesteps():
    for case in _pipeline_cases():
        meta = json.loads((case / "meta.json").read_text())
        golden = load_file(str(case / "outputs.safetensors"))["timesteps"]
        ours = make_scheduler(meta["solver"], meta["steps"], meta["shift"]).timesteps
        assert ours.tolist() == golden.float().tolist(), f"{case.name}: {ours.tolist()} != {golden.tolist()}"
