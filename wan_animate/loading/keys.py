"""Key layouts of Wan-Animate DiT checkpoints: prefixes and the fp8 scale conventions.

Layouts accepted:
- official (`patch_embedding.weight`, `blocks.0.self_attn.q.weight`, ...), also sharded with an index json;
- ComfyUI / repackaged single files, the same names under `model.diffusion_model.` or `diffusion_model.`;
- legacy ComfyUI "scaled fp8" (kijai's `*_scaled_KJ` files too): a `scaled_fp8` marker tensor (its dtype is the fp8
  format, float32 meaning e4m3fn), fp8 `<layer>.weight` with a float32 `<layer>.scale_weight` (effective weight =
  weight * scale_weight) and optionally `<layer>.scale_input` (an activation scale for fp8 matmuls; unused here);
- current ComfyUI quantised layers: `<layer>.comfy_quant` (uint8 bytes of a json `{"format": "float8_e4m3fn"}`) with
  `<layer>.weight_scale` and optionally `<layer>.input_scale`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

MODEL_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.")
SCALED_FP8_MARKER = "scaled_fp8"
WEIGHT_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
INPUT_SCALE_SUFFIXES = (".scale_input", ".input_scale")
QUANT_CONFIG_SUFFIX = ".comfy_quant"
SUPPORTED_QUANT_FORMATS = ("float8_e4m3fn", "float8_e5m2")


def strip_model_prefix(keys: list[str]) -> dict[str, str]:
    """Map each key without its model prefix to the key in the file.

    The prefix is the first of MODEL_PREFIXES that every key carries; a bare `scaled_fp8` marker next to prefixed
    keys is accepted too. Without a common prefix the keys are kept as they are.
    """
    for prefix in MODEL_PREFIXES:
        carriers = [k for k in keys if k != SCALED_FP8_MARKER]
        if carriers and all(k.startswith(prefix) for k in carriers):
            return {(k[len(prefix):] if k.startswith(prefix) else k): k for k in keys}
    return {k: k for k in keys}


@dataclass
class QuantKeys:
    """The quantisation bookkeeping keys of a checkpoint, split from its weights (names without model prefix)."""

    weight_scale_keys: dict[str, str] = field(default_factory=dict)  # "<layer>.weight" -> its scale key
    consumed: list[str] = field(default_factory=list)  # markers, input scales and format configs
    marker: str | None = None


def split_quant_keys(keys: list[str]) -> tuple[list[str], QuantKeys]:
    """Separate the weight keys from the fp8 scale / marker / config keys of both ComfyUI conventions."""
    quant = QuantKeys()
    weights = []
    for key in keys:
        if key == SCALED_FP8_MARKER:
            quant.marker = key
            quant.consumed.append(key)
        elif key.endswith(WEIGHT_SCALE_SUFFIXES):
            layer = key.rsplit(".", 1)[0]
            quant.weight_scale_keys[f"{layer}.weight"] = key
        elif key.endswith(INPUT_SCALE_SUFFIXES) or key.endswith(QUANT_CONFIG_SUFFIX):
            quant.consumed.append(key)
        else:
            weights.append(key)
    return weights, quant


def quant_format(config: torch.Tensor, key: str) -> str:
    """The `format` of a `<layer>.comfy_quant` tensor (uint8 json bytes); only fp8 formats are supported."""
    try:
        fmt = json.loads(bytes(config.to(torch.uint8).cpu().tolist()).decode("utf-8")).get("format")
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint key '{key}' is not a json quantisation config: {err}") from err
    if fmt not in SUPPORTED_QUANT_FORMATS:
        raise ValueError(f"checkpoint key '{key}' declares quantisation format {fmt!r}; supported: "
                         f"{', '.join(SUPPORTED_QUANT_FORMATS)}")
    return fmt


ANIMATE_ONLY_GROUPS = ("pose_patch_embedding.", "motion_encoder.", "face_encoder.", "face_adapter.")


def group_of(key: str) -> str:
    """A short module-group name for error messages: `blocks.3`, `motion_encoder`, `head`, ..."""
    parts = key.split(".")
    if parts[0] == "blocks" and len(parts) > 1:
        return ".".join(parts[:2])
    if parts[0] == "face_adapter" and len(parts) > 2:
        return ".".join(parts[:3])
    return parts[0]


# ----- recognising a file given to the wrong loader -----

ANIMATE_DIT = "a Wan-Animate diffusion model"
WAN_VAE = "a Wan VAE"
LORA = "a LoRA"
LOADER_HINTS = {
    ANIMATE_DIT: "load it with the Wan Animate Model Loader (models/diffusion_models/)",
    WAN_VAE: "load it with the Wan Animate VAE Loader (models/vae/)",
    LORA: "load it with the Wan Animate LoRA node (models/loras/)",
    "a umT5 text encoder": "load it with ComfyUI's Load CLIP node, type 'wan' (models/text_encoders/)",
    "a CLIP vision model": "load it with ComfyUI's Load CLIP Vision node (models/clip_vision/)",
}
_KIND_MARKERS = (  # (kind, a key containing any of these fragments), checked in order
    (LORA, ("lora_down", "lora_up", "lora_A.", "lora_B.", ".lora.down")),
    (ANIMATE_DIT, ("face_adapter.fuser_blocks.", "motion_encoder.enc.")),
    (WAN_VAE, ("encoder.downsamples.", "decoder.upsamples.")),
    ("a umT5 text encoder", ("encoder.block.0.layer.", "token_embedding.weight")),
    ("a CLIP vision model", ("vision_model.encoder.", "visual.transformer.")),
)


LORA_DIFF_SUFFIXES = (".diff", ".diff_b")  # full-weight / bias deltas, a LoRA-only convention


def checkpoint_kind(keys: list[str]) -> str | None:
    """What a checkpoint holds, judged from its key names: one of LOADER_HINTS' kinds, or None when unrecognised."""
    if any(key.endswith(LORA_DIFF_SUFFIXES) for key in keys):
        return LORA
    for kind, fragments in _KIND_MARKERS:
        if any(fragment in key for key in keys for fragment in fragments):
            return kind
    return None


def reject_other_kind(keys: list[str], wanted: str) -> None:
    """Raise a ValueError saying which loader takes the file when `keys` are recognisably not `wanted`'s."""
    kind = checkpoint_kind(keys)
    if kind is not None and kind != wanted:
        raise ValueError(f"this file is {kind}, not {wanted}: {LOADER_HINTS[kind]}")
