"""DPM-Solver++ (2M, midpoint) for flow matching: the official 'dpm++' sampler of Wan2.2-Animate.

Data-prediction multistep solver in log-SNR time lambda = log((1 - s) / s). The first step and the last step (down to
sigma 0) are first order; every other step is second order with the previous step's data prediction.
"""
from __future__ import annotations

import torch

from .flow_scheduler import FlowScheduler
from .sigma_schedule import uniform_shifted_sigmas


class DPMSolverPlusPlus2M(FlowScheduler):
    name = "dpm++"

    def __init__(self, steps: int, shift: float):
        super().__init__(uniform_shifted_sigmas(steps, shift))
        self._previous_x0: torch.Tensor | None = None

    def reset(self) -> None:
        super().reset()
        self._previous_x0 = None

    def _update(self, velocity: torch.Tensor, i: int, sample: torch.Tensor) -> torch.Tensor:
        x0 = self._predict_x0(velocity, i, sample)
        sigma_s, sigma_t = self.sigmas[i], self.sigmas[i + 1]
        alpha_t = 1 - sigma_t
        h = self._log_snr(i + 1) - self._log_snr(i)
        data_weight = alpha_t * (torch.exp(-h) - 1.0)  # -alpha_t * (1 - e^-h)
        first_order = i == 0 or i == self.steps - 1
        if first_order:
            prev = (sigma_t / sigma_s) * sample - data_weight * x0
        else:
            h_previous = self._log_snr(i) - self._log_snr(i - 1)
            ratio = h_previous / h
            slope = (1.0 / ratio) * (x0 - self._previous_x0)
            prev = (sigma_t / sigma_s) * sample - data_weight * x0 - 0.5 * data_weight * slope
        self._previous_x0 = x0
        return prev
