"""Pick a flow-matching scheduler by name."""
from __future__ import annotations

from typing import Literal

from .dpm_solver import DPMSolverPlusPlus2M
from .euler import FlowEuler
from .flow_scheduler import FlowScheduler
from .unipc import UniPCBh2

SchedulerName = Literal["dpm++", "unipc", "euler"]
SCHEDULERS: dict[str, type[FlowScheduler]] = {
    "dpm++": DPMSolverPlusPlus2M,
    "unipc": UniPCBh2,
    "euler": FlowEuler,
}


def make_scheduler(name: SchedulerName, steps: int, shift: float) -> FlowScheduler:
    """A fresh scheduler: 'dpm++' (official default), 'unipc' (official option) or 'euler'."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}; got {name!r}")
    return SCHEDULERS[name](steps, shift)
