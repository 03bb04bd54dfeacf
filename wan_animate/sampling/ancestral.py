"""Stochastic (SDE) flow samplers: each step adds fresh noise back after a deterministic step towards the data.

`FlowEulerAncestral` is Euler ancestral for rectified flow (eta = 1, the form ComfyUI's `euler_ancestral` uses for
flow models): step to sigma_down = sigma_next^2 / sigma along the velocity, then rescale and add noise so that the
sample again has noise level sigma_next. Noise comes from a CPU generator seeded per segment, so results do not depend
on the device.
"""
from __future__ import annotations

import numpy as np
import torch

from .flow_scheduler import FlowScheduler
from .sigma_schedule import uniform_shifted_sigmas


class StochasticFlowScheduler(FlowScheduler):
    """A scheduler that draws noise in its updates from `torch.Generator().manual_seed(seed)` (reset re-seeds it)."""

    def __init__(self, sigmas: np.ndarray, seed: int = 0):
        super().__init__(sigmas)
        self.seed = int(seed)
        self._generator = torch.Generator().manual_seed(self.seed)

    def reset(self) -> None:
        super().reset()
        self._generator = torch.Generator().manual_seed(self.seed)

    def _noise_like(self, sample: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(sample.shape, generator=self._generator, dtype=torch.float32)
        return noise.to(sample.device)


class FlowEulerAncestral(StochasticFlowScheduler):
    """Euler ancestral (eta 1) on the 'euler' schedule; the last step returns the data prediction."""

    name = "euler_a"

    def __init__(self, steps: int, shift: float, seed: int = 0):
        super().__init__(uniform_shifted_sigmas(steps, shift), seed)

    def _update(self, velocity: torch.Tensor, i: int, sample: torch.Tensor) -> torch.Tensor:
        sigma, sigma_next = self.sigmas[i], self.sigmas[i + 1]
        x0 = self._predict_x0(velocity, i, sample)
        if sigma_next == 0:
            return x0
        sigma_down = sigma_next * sigma_next / sigma
        alpha_next, alpha_down = 1 - sigma_next, 1 - sigma_down
        renoise = torch.sqrt(sigma_next**2 - (sigma_down * alpha_next / alpha_down) ** 2)
        ratio = sigma_down / sigma
        stepped = ratio * sample + (1 - ratio) * x0  # the ODE (Euler) step to sigma_down
        return (alpha_next / alpha_down) * stepped + renoise * self._noise_like(sample)
