"""Pick a flow-matching scheduler by name."""
from __future__ import annotations

from typing import Literal

from .ancestral import FlowEulerAncestral, StochasticFlowScheduler
from .distill import DistillEuler, DistillRenoise
from .dpm_solver import DPMSolverPlusPlus2M
from .euler import FlowEuler
from .flow_scheduler import FlowScheduler
from .unipc import UniPCBh2

SchedulerName = Literal["dpm++", "unipc", "euler", "euler_a", "lightx2v", "lightx2v_sde"]
SCHEDULERS: dict[str, type[FlowScheduler]] = {
    "dpm++": DPMSolverPlusPlus2M,
    "unipc": UniPCBh2,
    "euler": FlowEuler,
    "euler_a": FlowEulerAncestral,
    "lightx2v": DistillEuler,
    "lightx2v_sde": DistillRenoise,
}


def make_scheduler(name: SchedulerName, steps: int, shift: float, seed: int = 0) -> FlowScheduler:
    """A fresh scheduler: 'dpm++' (DPM++ 2M, official default), 'unipc' (official option), 'euler', 'euler_a' (Euler
    ancestral, stochastic), 'lightx2v' / 'lightx2v_sde' (the timesteps step-distill LoRAs are trained on). `seed`
    seeds the noise of the stochastic ones."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}; got {name!r}")
    cls = SCHEDULERS[name]
    if issubclass(cls, StochasticFlowScheduler):
        return cls(steps, shift, seed=seed)
    return cls(steps, shift)
