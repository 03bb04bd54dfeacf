"""First-order Euler integration of the flow ODE; on the same schedule as the official 'dpm++' sampler."""
from __future__ import annotations

import torch

from .flow_scheduler import FlowScheduler
from .sigma_schedule import uniform_shifted_sigmas


class FlowEuler(FlowScheduler):
    """x_next = x + (sigma_next - sigma) * v: what step-distilled (few-step, no-CFG) LoRAs are usually sampled with."""

    name = "euler"

    def __init__(self, steps: int, shift: float):
        super().__init__(uniform_shifted_sigmas(steps, shift))

    def _update(self, velocity: torch.Tensor, i: int, sample: torch.Tensor) -> torch.Tensor:
        return sample + (self.sigmas[i + 1] - self.sigmas[i]) * velocity
