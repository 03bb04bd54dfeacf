"""The interface every flow-matching scheduler shares: fixed timesteps and sigmas, one update per model call."""
from __future__ import annotations

import numpy as np
import torch

from .sigma_schedule import model_timesteps, solver_sigmas


class FlowScheduler:
    """Integrates the flow ODE dx/ds = v from sigma 1 (noise) to sigma 0 (data) in `steps` model calls.

    `timesteps` [steps] float32: the integer-valued timesteps (0..1000) to call the model with, in order.
    `sigmas` [steps + 1] float32: the noise levels the updates use, ending with 0.
    Call `step(velocity, i, x)` for i = 0, 1, ..., steps - 1 in order; multistep solvers keep the model outputs of
    earlier steps, so use a fresh scheduler (or `reset()`) for every segment.
    """

    name = "flow"

    def __init__(self, sigmas: np.ndarray):
        self.timesteps = model_timesteps(sigmas)
        self.sigmas = solver_sigmas(sigmas)
        self._next_index = 0

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def reset(self) -> None:
        """Forget the history of earlier steps, to integrate a new sample from step 0."""
        self._next_index = 0

    def step(self, model_output: torch.Tensor, step_index: int, sample: torch.Tensor) -> torch.Tensor:
        """The sample at sigmas[step_index + 1] from the model's velocity at sigmas[step_index].

        Computed in float32 and returned in `sample`'s dtype.
        """
        if step_index != self._next_index:
            raise ValueError(
                f"{self.name} scheduler: step_index {step_index} called out of order; expected {self._next_index} "
                "(steps run 0, 1, ..., steps - 1; call reset() to start again)"
            )
        if step_index >= self.steps:
            raise ValueError(f"{self.name} scheduler: step_index {step_index} is past the last step {self.steps - 1}")
        if model_output.shape != sample.shape:
            raise ValueError(
                f"{self.name} scheduler: model_output shape {tuple(model_output.shape)} differs from sample shape "
                f"{tuple(sample.shape)}"
            )
        prev_sample = self._update(model_output.float(), step_index, sample.float())
        self._next_index += 1
        return prev_sample.to(sample.dtype)

    def _update(self, velocity: torch.Tensor, i: int, sample: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _predict_x0(self, velocity: torch.Tensor, i: int, sample: torch.Tensor) -> torch.Tensor:
        """Data prediction from the velocity: x0 = x_s - s * v."""
        return sample - self.sigmas[i] * velocity

    def _log_snr(self, i: int) -> torch.Tensor:
        """lambda = log(alpha / sigma) with alpha = 1 - sigma (float32 scalar; +inf at sigma 0, -inf at sigma 1)."""
        sigma = self.sigmas[i]
        return torch.log(1 - sigma) - torch.log(sigma)
