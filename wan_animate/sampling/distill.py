"""Schedules of step-distilled Wan models and LoRAs (LightX2V / Self-Forcing style, e.g. 4 steps without CFG).

They are trained on fixed timesteps: for 4 steps the denoising step list [1000, 750, 500, 250] of the 1000-step
training grid, each shifted (shift 5 for the released LoRAs), so sigma_k = shift(step_k / 1000) and the model sees
t = 1000 * sigma_k without rounding (1000, 937.5, 833.33, 625 for 4 steps, shift 5). Other step counts use the evenly
spaced list 1000 * (1 - k / steps).

- "lightx2v": deterministic; each step moves the sample along the velocity to the next sigma (Euler; what LightX2V's
  Wan2.2 step-distill scheduler does).
- "lightx2v_sde": each step predicts the data x0 = x - sigma * v and re-noises it to the next sigma with fresh noise,
  x_next = (1 - sigma_next) * x0 + sigma_next * noise (LightX2V's Wan2.1 step-distill scheduler, as in DMD training).
"""
from __future__ import annotations

import numpy as np
import torch

from .ancestral import StochasticFlowScheduler
from .flow_scheduler import FlowScheduler
from .sigma_schedule import NUM_TRAIN_TIMESTEPS, _check_schedule_args, shift_sigmas


def distill_step_list(steps: int) -> list[int]:
    """The training-grid steps a distilled model is sampled at: [1000, 750, 500, 250] for 4 steps."""
    _check_schedule_args(steps, 1.0)
    return [NUM_TRAIN_TIMESTEPS - NUM_TRAIN_TIMESTEPS * k // steps for k in range(steps)]


def distill_sigmas(steps: int, shift: float) -> np.ndarray:
    """Shifted sigmas of the distill step list (float64, [steps], the first one 1)."""
    _check_schedule_args(steps, shift)
    return shift_sigmas(np.asarray(distill_step_list(steps), dtype=np.float64) / NUM_TRAIN_TIMESTEPS, shift)


def _unrounded_timesteps(sigmas: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(sigmas * NUM_TRAIN_TIMESTEPS).to(torch.float32)


class DistillEuler(FlowScheduler):
    name = "lightx2v"

    def __init__(self, steps: int, shift: float):
        sigmas = distill_sigmas(steps, shift)
        super().__init__(sigmas)
        self.timesteps = _unrounded_timesteps(sigmas)

    def _update(self, velocity: torch.Tensor, i: int, sample: torch.Tensor) -> torch.Tensor:
        return sample + (self.sigmas[i + 1] - self.sigmas[i]) * velocity


class DistillRenoise(StochasticFlowScheduler):
    name = "lightx2v_sde"

    def __init__(self, steps: int, shift: float, seed: int = 0):
        sigmas = distill_sigmas(steps, shift)
        super().__init__(sigmas, seed)
        self.timesteps = _unrounded_timesteps(sigmas)

    def _update(self, velocity: torch.Tensor, i: int, sample: torch.Tensor) -> torch.Tensor:
        x0 = self._predict_x0(velocity, i, sample)
        sigma_next = self.sigmas[i + 1]
        if sigma_next == 0:
            return x0
        return (1 - sigma_next) * x0 + sigma_next * self._noise_like(sample)
