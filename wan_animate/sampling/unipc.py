"""UniPC (B(h) = e^h - 1 variant 'bh2', order 2, data prediction) for flow matching: the official 'unipc' sampler.

Each step first corrects the sample it was given (UniC, using the model output just computed at that sample), then
predicts the next sample (UniP). Orders: the predictor is first order on the first and the last step and second order
in between; the corrector uses the order of the predictor that produced the sample; the final sample is not corrected.
"""
from __future__ import annotations

import torch

from .flow_scheduler import FlowScheduler
from .sigma_schedule import unipc_shifted_sigmas


class UniPCBh2(FlowScheduler):
    name = "unipc"

    def __init__(self, steps: int, shift: float):
        super().__init__(unipc_shifted_sigmas(steps, shift))
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._x0_history: list[torch.Tensor] = []  # data predictions of earlier steps, oldest first (at most 2)
        self._last_sample: torch.Tensor | None = None  # the sample the last predictor started from
        self._last_order = 0

    def _update(self, velocity: torch.Tensor, i: int, sample: torch.Tensor) -> torch.Tensor:
        x0 = self._predict_x0(velocity, i, sample)
        if i > 0:
            sample = self._correct(x0, i, sample)
        self._x0_history = (self._x0_history + [x0])[-2:]
        order = min(2, self.steps - i, i + 1)
        self._last_sample, self._last_order = sample, order
        return self._predict(i, sample, order)

    def _exponential_terms(self, source: int, target: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h = lambda_target - lambda_source, and e^-h - 1 (both h*phi_1(-h) and B(h) for bh2) at float32."""
        h = self._log_snr(target) - self._log_snr(source)
        expm1 = torch.expm1(-h)
        return h, expm1, expm1

    def _first_order(self, source: int, target: int, start: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The exponential-integrator step from sigmas[source] to sigmas[target] with a constant data prediction."""
        sigma_s, sigma_t = self.sigmas[source], self.sigmas[target]
        _, h_phi_1, _ = self._exponential_terms(source, target)
        return sigma_t / sigma_s * start - (1 - sigma_t) * h_phi_1 * x0

    def _predict(self, i: int, sample: torch.Tensor, order: int) -> torch.Tensor:
        """UniP: from sigmas[i] to sigmas[i + 1]."""
        x0 = self._x0_history[-1]
        prev = self._first_order(i, i + 1, sample, x0)
        if order == 2:
            h, _, b_h = self._exponential_terms(i, i + 1)
            ratio = (self._log_snr(i - 1) - self._log_snr(i)) / h
            slope = (self._x0_history[-2] - x0) / ratio
            prev = prev - (1 - self.sigmas[i + 1]) * b_h * (0.5 * slope)
        return prev

    def _correct(self, x0_here: torch.Tensor, i: int, predicted: torch.Tensor) -> torch.Tensor:
        """UniC: redo the step sigmas[i - 1] -> sigmas[i] with the data prediction made at the predicted sample."""
        x0_before = self._x0_history[-1]
        h, h_phi_1, b_h = self._exponential_terms(i - 1, i)
        corrected = self._first_order(i - 1, i, self._last_sample, x0_before)
        slope_here = x0_here - x0_before
        if self._last_order == 1:
            correction = 0.5 * slope_here
        else:
            ratio = (self._log_snr(i - 2) - self._log_snr(i - 1)) / h
            slope_before = (self._x0_history[-2] - x0_before) / ratio
            weight_before, weight_here = _corrector_weights(h, h_phi_1, b_h, ratio)
            correction = weight_before * slope_before + weight_here * slope_here
        return corrected - (1 - self.sigmas[i]) * b_h * correction


def _corrector_weights(
    h: torch.Tensor, h_phi_1: torch.Tensor, b_h: torch.Tensor, ratio: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Second-order UniC weights (rho_before, rho_here): the solution of [[1, 1], [r, 1]] @ rho = b, where b holds
    the bh2 right-hand side built from the phi functions of -h, r = ratio of the earlier step to this one."""
    hh = -h
    h_phi_2 = h_phi_1 / hh - 1
    h_phi_3 = h_phi_2 / hh - 0.5
    b1 = h_phi_2 / b_h
    b2 = 2 * h_phi_3 / b_h
    weight_before = (b1 - b2) / (1 - ratio)
    return weight_before, b1 - weight_before
