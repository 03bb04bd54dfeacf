"""Read LoRA files of every common layout into one normalised form: per target module down, up, alpha, diff, diff_b.

Layouts understood (any mix, per key):
- official Wan2.2 peft checkpoint: torch file `{"state_dict": {...}}` with `blocks.N.self_attn.q.lora_A.weight` /
  `lora_B.weight` (also with a `base_model.model.` prefix or a peft adapter name: `lora_A.default.weight`); read with
  `torch.load(weights_only=True)`, never unpickling code. peft files carry no alpha (it lives in the adapter config):
  the scale is 1, which is right for the official relighting LoRA (rank = alpha).
- ComfyUI / diffusion-pipe safetensors: the same names under `diffusion_model.` or `model.diffusion_model.`.
- kohya-style: `lora_down.weight` / `lora_up.weight` / `alpha` (scale alpha / rank), with dotted module names or
  `lora_unet_blocks_0_self_attn_q` underscore names (resolved against the model's modules when applied).
- diffusers Wan names (`transformer.blocks.0.attn1.to_q.lora_A.weight`), mapped to the original names
  (`lora_diffusers`).
- full deltas as distillation LoRAs ship them: `<module>.diff` (added to the weight, e.g. a norm's),
  `<module>.diff_b` (added to the bias) and `<module>.diff_m` (LightX2V: added to the module's `modulation`
  parameter, e.g. `blocks.0.diff_m` to `blocks.0.modulation`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch

from .keys import LOADER_HINTS, checkpoint_kind
from .lora_diffusers import diffusers_to_wan
from .state_dict import load_state_dict

KEY_PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "lora_unet_")
_FACTOR = re.compile(r"^(?P<target>.+)\.lora_(?P<kind>A|B|down|up)(?:\.[A-Za-z0-9_-]+)?\.weight$")
_UNSUPPORTED = ("dora_scale", "lora_mid", "hada_", "lokr_", "oft_", "glora_")
_DIFFUSERS_MARKERS = ("attn1.", "attn2.", "condition_embedder.")


@dataclass
class LoraTarget:
    """The change one LoRA makes to one module (or parameter) of the model."""

    down: torch.Tensor | None = None  # [rank, in, *kernel]
    up: torch.Tensor | None = None  # [out, rank, *ones]
    alpha: float | None = None
    diff: torch.Tensor | None = None  # added to the weight (same shape)
    diff_b: torch.Tensor | None = None  # added to the bias (same shape)

    @property
    def rank(self) -> int:
        return 0 if self.down is None else self.down.shape[0]

    @property
    def scale(self) -> float:
        """alpha / rank; 1 when the file has no alpha."""
        return 1.0 if self.alpha is None else self.alpha / self.rank


@dataclass
class LoRA:
    """A LoRA file in normalised form. `targets` keys are module paths without any file prefix (kohya files keep
    their underscore form, e.g. `blocks_0_self_attn_q`); `ignored_keys` are keys of no known kind."""

    name: str
    targets: dict[str, LoraTarget]
    source_keys: list[str] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)


def load_lora(path: str, name: str | None = None) -> LoRA:
    """Read a LoRA from a .safetensors file or a torch checkpoint (.ckpt/.pt/.pth; weights only)."""
    return lora_from_state_dict(load_state_dict(path), name or os.path.basename(path))


def lora_from_state_dict(state: dict[str, torch.Tensor], name: str) -> LoRA:
    """Normalise a LoRA state dict (any layout above)."""
    targets: dict[str, LoraTarget] = {}
    ignored: list[str] = []
    diffusers_names = any(marker in key for key in state for marker in _DIFFUSERS_MARKERS)
    for key, tensor in state.items():
        if any(marker in key for marker in _UNSUPPORTED):
            raise ValueError(
                f"LoRA {name}: key '{key}' belongs to a LoRA variant (DoRA/LoCon/LoHa/LoKr/OFT) that is not "
                "supported; only plain LoRA (down/up/alpha) and diff/diff_b keys are"
            )
        parsed = _parse_key(_strip_prefixes(key))
        if parsed is None:
            ignored.append(key)
            continue
        target_name, field_name = parsed
        if diffusers_names:
            target_name = diffusers_to_wan(target_name)
        target = targets.setdefault(target_name, LoraTarget())
        if getattr(target, field_name) is not None:
            raise ValueError(f"LoRA {name}: '{field_name}' of module '{target_name}' is given twice (key '{key}')")
        setattr(target, field_name, float(tensor.float().item()) if field_name == "alpha" else tensor)
    for target_name, target in targets.items():
        _check_target(name, target_name, target)
    if not targets:
        kind = checkpoint_kind(list(state))
        found = f"this file is {kind}: {LOADER_HINTS[kind]}" if kind else f"first keys: {list(state)[:5]}"
        raise ValueError(f"LoRA {name}: no LoRA keys found ({found})")
    return LoRA(name=name, targets=targets, source_keys=list(state), ignored_keys=ignored)


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in KEY_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def _parse_key(key: str) -> tuple[str, str] | None:
    """`blocks.0.self_attn.q.lora_A.weight` -> ("blocks.0.self_attn.q", "down"); None for unknown keys."""
    factor = _FACTOR.match(key)
    if factor:
        kind = factor.group("kind")
        return factor.group("target"), "down" if kind in ("A", "down") else "up"
    if key.endswith(".diff_m"):  # a delta of the module's modulation parameter: a `diff` of that parameter
        return key[: -len(".diff_m")] + ".modulation", "diff"
    for suffix, field_name in ((".diff_b", "diff_b"), (".diff", "diff"), (".alpha", "alpha")):
        if key.endswith(suffix):
            return key[: -len(suffix)], field_name
    return None


def _check_target(lora_name: str, target_name: str, target: LoraTarget) -> None:
    if (target.down is None) != (target.up is None):
        missing = "up (lora_B / lora_up)" if target.up is None else "down (lora_A / lora_down)"
        raise ValueError(f"LoRA {lora_name}: module '{target_name}' has no {missing} weight")
    if target.down is None:
        if target.alpha is not None and target.diff is None and target.diff_b is None:
            raise ValueError(f"LoRA {lora_name}: module '{target_name}' has an alpha but no LoRA weights")
        return
    if target.up.ndim < 2 or target.down.ndim < 2 or target.up.shape[1] != target.down.shape[0]:
        raise ValueError(
            f"LoRA {lora_name}: module '{target_name}': up {tuple(target.up.shape)} and down "
            f"{tuple(target.down.shape)} do not share a rank"
        )
    if any(size != 1 for size in target.up.shape[2:]):
        raise ValueError(
            f"LoRA {lora_name}: module '{target_name}': up has a spatial kernel {tuple(target.up.shape[2:])}; "
            "only 1x1 up projections are supported"
        )


def guess_lora_family(keys: list[str]) -> str:
    """A best guess of which model a LoRA was made for, from its key names (for error messages)."""
    text = " ".join(keys[:2000])
    guesses = (
        (("double_blocks", "single_blocks"), "Flux or HunyuanVideo"),
        (("joint_blocks",), "Stable Diffusion 3"),
        (("input_blocks", "down_blocks", "lora_unet_down", "lora_unet_input"), "Stable Diffusion (UNet)"),
        (("lora_te", "text_model", "encoder.block"), "text-encoder"),
        (("transformer_blocks", "attn1_to_q"), "diffusers-format (non-Wan)"),
        (("self_attn", "cross_attn"), "Wan, with an unrecognised key prefix or another model's layer names"),
    )
    for markers, family in guesses:
        if any(marker in text for marker in markers):
            return family
    return f"unknown-model (first keys: {keys[:3]})"
