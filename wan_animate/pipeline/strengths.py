"""How strongly the pose and face branches steer the DiT at each denoising step.

A branch has a strength (0..2; 1 is the official model) and a window of the denoising steps given as fractions
start..end of the step count: step i (0-based, of n) is inside when start <= i / n < end, or when end is 1 and i is
the last step. Outside the window the branch is left out (strength 0), like ComfyUI's ControlNet start/end percent.
"""
from __future__ import annotations

import torch

MAX_STRENGTH = 2.0


def check_branch(name: str, strength: float, start: float, end: float) -> None:
    """Raise ValueError unless 0 <= strength <= 2 and 0 <= start <= end <= 1."""
    if not 0 <= strength <= MAX_STRENGTH:
        raise ValueError(f"{name}_strength is {strength}; expected 0 to {MAX_STRENGTH}")
    if not 0 <= start <= end <= 1:
        raise ValueError(f"{name}_start ({start}) and {name}_end ({end}) must satisfy 0 <= start <= end <= 1")


def strength_at(strength: float, start: float, end: float, step: int, steps: int) -> float:
    """The branch's strength at step `step` of `steps` (see the module docstring)."""
    fraction = step / steps
    inside = start <= fraction < end or (end == 1 and step == steps - 1)
    return strength if inside else 0.0


def step_index(timesteps: torch.Tensor, t: torch.Tensor) -> int:
    """Index of the scheduler timestep nearest to t [1] (the timesteps of one schedule are distinct)."""
    return int((timesteps.float().cpu() - t.float().cpu()).abs().argmin())
