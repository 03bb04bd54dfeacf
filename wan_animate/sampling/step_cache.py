"""Runtime-adaptive step caching (in the spirit of EasyCache): skip a model call when its output change is predicted
small, needing no per-model calibration.

For one guidance branch of one segment, the model maps latents x to a velocity v. Between two computed steps the
"transformation rate" k = |v_a - v_b| / |x_a - x_b| (L2 norms) is measured; at a new step the output change is
predicted from the input change, k * |x - x_prev| / |v_last|, and accumulated since the last computed step. While
the accumulated prediction stays below `threshold`, the call is skipped and the last computed step's transformation
is reused: v = x + (v_last - x_last). The first `warmup` calls and the last call are always computed; a reuse is
only possible once k has been measured. threshold 0 never skips.

`condition` is whatever else the call depends on that changes from step to step (the pose and face strengths of a
strength window; the timestep is left out, as in EasyCache). A call whose condition differs from that of the last
computed call is always computed, and it starts the measurement afresh: k is only measured between two computed
calls under the same condition, so the call after a change is computed too, and a reused transformation always comes
from a call under the same condition.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

DEFAULT_WARMUP = 2


class StepCache:
    """Decides, call by call, whether one guidance branch's model output is computed or reused (see module doc)."""

    def __init__(self, threshold: float, total_calls: int, warmup: int = DEFAULT_WARMUP):
        if threshold < 0:
            raise ValueError(f"cache threshold is {threshold}; expected 0 (off) or a positive fraction such as 0.05")
        self.threshold = float(threshold)
        self.total_calls = total_calls
        self.warmup = max(warmup, 2)  # two computed steps are needed to measure k
        self.calls = 0
        self.reused = 0
        self._rate: float | None = None  # k
        self._accumulated = 0.0
        self._previous_input: torch.Tensor | None = None
        self._computed_input: torch.Tensor | None = None
        self._computed_output: torch.Tensor | None = None
        self._computed_condition: object = None

    def __call__(self, x: torch.Tensor, compute: Callable[[], torch.Tensor], condition: object = None) -> torch.Tensor:
        """The branch's output at latents `x` under `condition`: `compute()` or the reused transformation."""
        index, self.calls = self.calls, self.calls + 1
        x = x.float()
        if condition != self._computed_condition:  # nothing computed so far tells what this condition gives
            self._rate = None
            self._computed_input = self._computed_output = None
            self._computed_condition = condition
        if self._may_reuse(index, x):
            self.reused += 1
            self._previous_input = x
            return x + (self._computed_output - self._computed_input)
        output = compute().float()
        if self._computed_input is not None:
            input_change = _norm(x - self._computed_input)
            if input_change > 0:
                self._rate = _norm(output - self._computed_output) / input_change
        self._accumulated = 0.0
        self._previous_input = self._computed_input = x
        self._computed_output = output
        return output

    def _may_reuse(self, index: int, x: torch.Tensor) -> bool:
        if self.threshold == 0 or index < self.warmup or index >= self.total_calls - 1 or self._rate is None:
            return False
        scale = _norm(self._computed_output)
        if scale == 0:
            return False
        self._accumulated += self._rate * _norm(x - self._previous_input) / scale
        return self._accumulated < self.threshold


def _norm(t: torch.Tensor) -> float:
    return torch.linalg.vector_norm(t).item()
