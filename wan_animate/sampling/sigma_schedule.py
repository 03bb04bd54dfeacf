"""Flow-matching noise levels (sigmas) and the timesteps the model sees, as the official Wan2.2 samplers build them.

A sigma s in [0, 1] is the noise fraction of the flow x_s = (1 - s) * x0 + s * noise; the model is trained on
t = 1000 * s. The official release builds its schedules in float64 with numpy, hands the model the integer-truncated
timesteps and runs the solver updates on the float32 sigmas with a final sigma of 0. numpy is used here too, so that
the truncation of values like 999.99... lands on the same integer.
"""
from __future__ import annotations

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """The resolution shift of flow matching: s' = shift * s / (1 + (shift - 1) * s)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def uniform_shifted_sigmas(steps: int, shift: float) -> np.ndarray:
    """`steps` sigmas from 1 down to (not including) 0, evenly spaced, then shifted (float64).

    The official `get_sampling_sigmas`, used with its DPM++ solver; the first timestep is 1000.
    """
    _check_schedule_args(steps, shift)
    return shift_sigmas(np.linspace(1.0, 0.0, steps + 1)[:steps], shift)


def unipc_shifted_sigmas(steps: int, shift: float) -> np.ndarray:
    """`steps` sigmas from the training schedule's largest sigma down to (not including) 0, then shifted (float64).

    The official UniPC scheduler spaces its sigmas from the float32 value of 1 - 1/1000 (its training grid's top),
    so its first timestep is 999 rather than 1000.
    """
    _check_schedule_args(steps, shift)
    sigma_max = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))
    return shift_sigmas(np.linspace(sigma_max, 0.0, steps + 1)[:steps], shift)


def model_timesteps(sigmas: np.ndarray) -> torch.Tensor:
    """The timesteps handed to the model: 1000 * sigma truncated to an integer, as float32 [steps]."""
    truncated = (sigmas * NUM_TRAIN_TIMESTEPS).astype(np.int64)
    return torch.from_numpy(truncated).to(torch.float32)


def solver_sigmas(sigmas: np.ndarray) -> torch.Tensor:
    """The sigmas the solver updates use: float32 [steps + 1], the last one 0."""
    return torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))


def _check_schedule_args(steps: int, shift: float) -> None:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if not shift > 0:
        raise ValueError(f"shift must be positive; got {shift!r}")
