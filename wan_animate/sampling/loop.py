"""The denoising loop: one (guided) model call and one scheduler update per step, with progress and interruption.

The loop knows nothing about the model: `velocity(x, t)` returns the (already guided) flow velocity for the latents
`x` at timestep `t` ([1], 0..1000 scale). Before every step `interrupt()` is called (it raises to stop, e.g.
ComfyUI's `throw_exception_if_processing_interrupted`); after every step `on_step(i, x0_preview)` is called with the
step's index and its data prediction x0 = x - sigma * v (what a latent preview shows).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .flow_scheduler import FlowScheduler

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def denoise(
    velocity: VelocityFn,
    latents: torch.Tensor,
    scheduler: FlowScheduler,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    interrupt: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Integrate `latents` (pure noise at the first timestep) down to sigma 0 with `scheduler`; returns the result."""
    scheduler.reset()
    for i, t in enumerate(scheduler.timesteps):
        if interrupt is not None:
            interrupt()
        timestep = t.reshape(1).to(latents.device)
        v = velocity(latents, timestep)
        if on_step is not None:
            sigma = scheduler.sigmas[i].to(latents.device)
            on_step(i, latents.float() - sigma * v.float())
        latents = scheduler.step(v, i, latents)
    return latents
