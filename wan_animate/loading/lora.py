"""LoRA support: read any common LoRA layout (`load_lora`), apply stacks of them to a model (`apply_loras`) and undo
them (`remove_loras`, or `set_loras` to switch to another stack). `lora_format` lists the layouts; `lora_apply` and
`lora_quantised` say how deltas are applied."""
from __future__ import annotations

from .lora_apply import (
    LoraReport,
    applied_loras,
    apply_loras,
    remove_all_loras,
    remove_loras,
    set_loras,
)
from .lora_format import LoRA, LoraTarget, guess_lora_family, load_lora, lora_from_state_dict

__all__ = [
    "LoRA",
    "LoraReport",
    "LoraTarget",
    "applied_loras",
    "apply_loras",
    "guess_lora_family",
    "load_lora",
    "lora_from_state_dict",
    "remove_all_loras",
    "remove_loras",
    "set_loras",
]
