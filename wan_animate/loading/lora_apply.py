"""Apply normalised LoRAs to a model, report what matched, and undo them.

Effect of a LoRA at strength s on a module: weight += s * (alpha / rank) * up @ down, weight += s * diff,
bias += s * diff_b. Ordinary weights are merged in place: the sum is formed in float32 and written back in the
weight's dtype, all LoRAs of one call summed before the single write-back. fp8 and GGUF layers keep the delta unmerged
and exact (see `lora_quantised`). Stacking: call `apply_loras` once with several LoRAs, or several times.

Run-time application (`apply_loras(..., runtime=True)`, what `DiTHandle` uses): low-rank and dense deltas on plain
Linear layers are kept beside the untouched weight and added at every call (see `lora_runtime`), like quantised layers;
only the remaining small targets (biases, norms, modulation, convolutions) are merged, with their originals kept. The
model's Linear weights are never written, so removing or changing a LoRA is exact and copies no large tensor.

Undo (to change strengths without reloading the model): `apply_loras(..., keep_originals=True)` (the default) copies
each merged weight to the CPU before changing it, and `remove_loras(model, report)` puts them back bit-exactly and
detaches its fp8 / GGUF deltas. Removals go in reverse order of application (checked); `remove_all_loras(model)`
undoes every application. With keep_originals=False nothing is copied and the merge cannot be undone.
`set_loras(model, loras)` makes the model carry exactly the given LoRAs (what a ComfyUI node re-executed with a new
strength wants): it does nothing when they are already applied, else removes every application and applies them.
Host memory for the originals: one copy of every merged weight (about 32 GB for a LoRA on all block Linear layers of
the bf16 14B model; nothing for fp8 and GGUF layers, whose deltas are removed exactly without a copy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..runtime.fp8 import FP8Linear, is_fp8
from ..runtime.gguf_linear import GGUFLinear
from .lora_format import LoRA, LoraTarget, guess_lora_family
from .lora_quantised import add_quantised_delta, remove_quantised_delta
from .lora_runtime import LoraLinear, add_linear_delta, remove_linear_delta

_APPLIED_ATTR = "_wan_animate_lora_reports"


@dataclass
class LoraReport:
    """What one `apply_loras` call did, per LoRA name."""

    requested: list[tuple[str, float]] = field(default_factory=list)  # (LoRA name, strength), in order
    matched: dict[str, list[str]] = field(default_factory=dict)  # model parameters each LoRA changed
    unmatched: dict[str, list[str]] = field(default_factory=dict)  # LoRA targets with no counterpart in the model
    ignored_keys: dict[str, list[str]] = field(default_factory=dict)  # file keys of no known kind
    can_undo: bool = True
    merged: list[str] = field(default_factory=list, repr=False)  # parameters changed in place
    originals: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # parameter -> value before (CPU)
    quantised_entries: list[tuple[str, str]] = field(default_factory=list, repr=False)  # (layer name, delta entry)
    runtime_entries: list[tuple[str, str]] = field(default_factory=list, repr=False)  # on plain Linear layers

    def summary(self) -> str:
        lines = []
        for name, params in self.matched.items():
            line = f"{name}: changed {len(params)} tensors"
            if self.unmatched.get(name):
                line += f"; {len(self.unmatched[name])} targets not in the model: {self.unmatched[name][:5]}"
            if self.ignored_keys.get(name):
                line += f"; ignored keys: {self.ignored_keys[name][:5]}"
            lines.append(line)
        return "\n".join(lines)


@dataclass
class _Change:
    """One validated change: a low-rank or dense delta to a parameter, times `factor`."""

    param_name: str
    factor: float
    up: torch.Tensor | None = None
    down: torch.Tensor | None = None
    dense: torch.Tensor | None = None


def apply_loras(
    model: nn.Module, loras: list[tuple[LoRA, float]], keep_originals: bool = True, runtime: bool = False
) -> LoraReport:
    """Apply `(lora, strength)` pairs in order. Everything is validated before any weight changes.

    runtime: keep the deltas of plain Linear layers unmerged (exact undo without copies; see the module docstring);
    the other merged targets then always keep their originals.

    Raises ValueError when a LoRA matches no layer of the model, or when a delta's shape differs from its target's.
    """
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    flat_names = {name.replace(".", "_"): name for name in modules if name}
    keep_originals = keep_originals or runtime
    report = LoraReport(can_undo=keep_originals, requested=[(lora.name, float(s)) for lora, s in loras])
    changes: list[_Change] = []
    for lora, strength in loras:
        label = _unique_label(lora.name, report.matched)
        lora_changes, unmatched = _plan_lora(lora, float(strength), modules, params, flat_names)
        if not lora_changes:
            raise ValueError(
                f"LoRA {lora.name} matches no layer of this model; it looks like a "
                f"{guess_lora_family(lora.source_keys)} LoRA (its targets: {sorted(lora.targets)[:5]})"
            )
        report.matched[label] = sorted({change.param_name for change in lora_changes})
        report.unmatched[label] = unmatched
        report.ignored_keys[label] = list(lora.ignored_keys)
        changes += lora_changes

    applied = getattr(model, _APPLIED_ATTR, [])
    by_param: dict[str, list[_Change]] = {}
    for change in changes:
        by_param.setdefault(change.param_name, []).append(change)
    for param_name, param_changes in by_param.items():
        layer_name, _, leaf = param_name.rpartition(".")
        layer = modules.get(layer_name)
        if leaf == "weight" and _is_quantised(layer):
            for number, change in enumerate(param_changes):
                entry = f"lora{len(applied)}_{number}"
                add_quantised_delta(layer, entry, change.factor, up=change.up, down=change.down, dense=change.dense)
                report.quantised_entries.append((layer_name, entry))
        elif runtime and leaf == "weight" and type(layer) in (nn.Linear, LoraLinear):
            for number, change in enumerate(param_changes):
                entry = f"lora{len(applied)}_{number}"
                add_linear_delta(layer, entry, change.factor, up=change.up, down=change.down, dense=change.dense)
                report.runtime_entries.append((layer_name, entry))
        else:
            _merge(params[param_name], param_changes, report, keep_originals)
    setattr(model, _APPLIED_ATTR, applied + [report])
    return report


def remove_loras(model: nn.Module, report: LoraReport) -> None:
    """Undo one `apply_loras` call (the latest one still applied): restore merged weights, detach quantised deltas."""
    applied = getattr(model, _APPLIED_ATTR, [])
    if not applied or applied[-1] is not report:
        position = next((i for i, r in enumerate(applied) if r is report), None)
        if position is None:
            raise ValueError("this LoRA report does not belong to an application still on this model")
        raise ValueError(
            f"LoRAs must be removed in reverse order of application: {len(applied) - 1 - position} later "
            "application(s) are still on the model"
        )
    if report.merged and not report.can_undo:
        raise ValueError("these LoRAs were merged with keep_originals=False and cannot be removed; reload the model")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for param_name, original in report.originals.items():
            params[param_name].copy_(original)
    for layer_name, entry in report.quantised_entries:
        remove_quantised_delta(model.get_submodule(layer_name), entry)
    for layer_name, entry in report.runtime_entries:
        remove_linear_delta(model.get_submodule(layer_name), entry)
    setattr(model, _APPLIED_ATTR, applied[:-1])


def set_loras(model: nn.Module, loras: list[tuple[LoRA, float]], keep_originals: bool = True) -> list[LoraReport]:
    """Make `model` carry exactly `loras` (by name and strength, in order); returns the applications now on it."""
    wanted = [(lora.name, float(strength)) for lora, strength in loras]
    current = [pair for report in applied_loras(model) for pair in report.requested]
    if current != wanted:
        remove_all_loras(model)
        if loras:
            apply_loras(model, loras, keep_originals)
    return applied_loras(model)


def remove_all_loras(model: nn.Module) -> None:
    """Undo every LoRA application on `model`, latest first."""
    for report in reversed(getattr(model, _APPLIED_ATTR, [])):
        remove_loras(model, report)


def applied_loras(model: nn.Module) -> list[LoraReport]:
    """The reports of the applications currently on `model`, oldest first."""
    return list(getattr(model, _APPLIED_ATTR, []))


def _unique_label(name: str, taken: dict[str, list[str]]) -> str:
    label, copy = name, 2
    while label in taken:
        label, copy = f"{name} ({copy})", copy + 1
    return label


def _plan_lora(
    lora: LoRA, strength: float, modules: dict[str, nn.Module], params: dict[str, nn.Parameter],
    flat_names: dict[str, str],
) -> tuple[list[_Change], list[str]]:
    changes: list[_Change] = []
    unmatched: list[str] = []
    for target_name, target in lora.targets.items():
        module_name = target_name if target_name in modules else flat_names.get(target_name)
        if module_name is not None and (isinstance(getattr(modules[module_name], "weight", None), nn.Parameter)
                                        or isinstance(modules[module_name], GGUFLinear)):
            changes += _module_changes(lora.name, target_name, module_name, modules[module_name], target, strength)
        elif target_name in params:
            changes += _parameter_changes(lora.name, target_name, params[target_name], target, strength)
        else:
            unmatched.append(target_name)
    return changes, unmatched


def _module_changes(
    lora_name: str, target_name: str, module_name: str, module: nn.Module, target: LoraTarget, strength: float
) -> list[_Change]:
    weight = module.weight
    if is_fp8(weight.dtype) and not isinstance(module, FP8Linear):
        raise ValueError(f"LoRA {lora_name}: '{module_name}' stores fp8 weights outside an FP8Linear layer")
    # a GGUF layer's weight buffer holds raw blocks ([out, row bytes]); its values are [out, in]
    shape = (module.out_features, module.in_features) if isinstance(module, GGUFLinear) else tuple(weight.shape)
    changes = []
    if target.down is not None:
        out_features, in_features = shape[0], math.prod(shape[1:])
        up = target.up.flatten(1)  # [out, rank]
        down = target.down.flatten(1)  # [rank, in * kernel]
        if (up.shape[0], down.shape[1]) != (out_features, in_features):
            raise ValueError(
                f"LoRA {lora_name}: key '{target_name}' gives a [{up.shape[0]}, {down.shape[1]}] delta (up "
                f"{tuple(target.up.shape)}, down {tuple(target.down.shape)}) but the model's '{module_name}.weight' "
                f"is {shape}; is this LoRA for another model size?"
            )
        changes.append(_Change(f"{module_name}.weight", strength * target.scale, up=up, down=down))
    if target.diff is not None:
        _check_shape(lora_name, f"{target_name}.diff", target.diff, f"{module_name}.weight", shape)
        changes.append(_Change(f"{module_name}.weight", strength, dense=target.diff))
    if target.diff_b is not None:
        bias = getattr(module, "bias", None)
        if not isinstance(bias, nn.Parameter):
            raise ValueError(f"LoRA {lora_name}: key '{target_name}.diff_b' targets '{module_name}', which has no bias")
        _check_shape(lora_name, f"{target_name}.diff_b", target.diff_b, f"{module_name}.bias", tuple(bias.shape))
        changes.append(_Change(f"{module_name}.bias", strength, dense=target.diff_b))
    return changes


def _parameter_changes(
    lora_name: str, target_name: str, param: nn.Parameter, target: LoraTarget, strength: float
) -> list[_Change]:
    """A target naming a bare parameter (e.g. `blocks.0.modulation`): only a full `diff` can apply to it."""
    if target.down is not None or target.diff_b is not None or is_fp8(param.dtype):
        raise ValueError(
            f"LoRA {lora_name}: '{target_name}' is a bare parameter of the model; only a '.diff' can change it"
        )
    _check_shape(lora_name, f"{target_name}.diff", target.diff, target_name, tuple(param.shape))
    return [_Change(target_name, strength, dense=target.diff)]


def _check_shape(lora_name: str, key: str, delta: torch.Tensor, param_name: str, shape: tuple[int, ...]) -> None:
    if tuple(delta.shape) != shape:
        raise ValueError(
            f"LoRA {lora_name}: key '{key}' has shape {tuple(delta.shape)} but the model's '{param_name}' is "
            f"{shape}; is this LoRA for another model size?"
        )


def _is_quantised(layer: nn.Module | None) -> bool:
    """Whether `layer` dequantises its weight at use (fp8 or GGUF storage), so LoRAs stay float deltas beside it."""
    return isinstance(layer, GGUFLinear) or (isinstance(layer, FP8Linear) and is_fp8(layer.weight.dtype))


def _merge(param: nn.Parameter, changes: list[_Change], report: LoraReport, keep_originals: bool) -> None:
    """param += sum of the changes, formed in float32 on the parameter's device, written back in its dtype."""
    name = changes[0].param_name
    device = param.device
    with torch.no_grad():
        total = param.detach().float()
        for change in changes:
            total = total + change.factor * _delta(change, device).reshape(param.shape)
        report.merged.append(name)
        if keep_originals:
            report.originals[name] = param.detach().to("cpu", copy=True)
        param.copy_(total.to(param.dtype))


def _delta(change: _Change, device: torch.device) -> torch.Tensor:
    if change.dense is not None:
        return change.dense.to(device=device, dtype=torch.float32)
    up = change.up.to(device=device, dtype=torch.float32)
    down = change.down.to(device=device, dtype=torch.float32).flatten(1)
    return up @ down
