"""Checks of the nodes' inputs, with the node input names in their errors: finite numbers and tensors on every node
(`guard_finite_inputs`), what a CONDITIONING or CLIP_VISION_OUTPUT must hold, frame counts and sizes that must agree,
and what the loaded DiT reads."""
from __future__ import annotations

import functools
import inspect
import math

import torch

from wan_animate.model.dit import WanAnimateConfig
from wan_animate.pipeline.generate import SIZE_MULTIPLE, AnimateInputs
from wan_animate.preprocess.video import padding_resize

from .convert import image_to_u8, u8_to_image


def describe(value) -> str:
    """A short account of what a node input holds, for error messages: `a list of 1 items starting with ...`."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        first = f" starting with {describe(value[0])}" if value else ""
        return f"a {type(value).__name__} of {len(value)} items{first}"
    return "nothing" if value is None else f"a {type(value).__name__}"


FINITE_INPUT_TYPES = ("FLOAT", "IMAGE", "MASK", "CONDITIONING", "CLIP_VISION_OUTPUT", "AUDIO")
FINITE_CHECK_CHUNK = 1 << 24  # elements tested at a time: the boolean map of a long 720p video stays small


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether a tensor holds no NaN or infinity (integer tensors always do), tested in slices along dim 0."""
    if not tensor.is_floating_point():
        return True
    if tensor.ndim == 0 or tensor.numel() == 0:
        return bool(torch.isfinite(tensor).all())
    step = max(1, FINITE_CHECK_CHUNK // max(1, tensor[0].numel()))
    return all(bool(torch.isfinite(part).all()) for part in tensor.split(step))


def _checked_tensors(kind: str, value) -> list[torch.Tensor]:
    """The tensors of an input that the pack reads: IMAGE / MASK themselves, the embeddings of every CONDITIONING
    entry, a CLIP_VISION_OUTPUT's penultimate features, an AUDIO's waveform. Values of another shape are left to the
    inputs' own checks."""
    if kind in ("IMAGE", "MASK"):
        return [value] if isinstance(value, torch.Tensor) else []
    if kind == "AUDIO":
        waveform = value.get("waveform") if isinstance(value, dict) else None
        return [waveform] if isinstance(waveform, torch.Tensor) else []
    if kind == "CONDITIONING":
        entries = value if isinstance(value, (list, tuple)) else []
        return [e[0] for e in entries if isinstance(e, (list, tuple)) and e and isinstance(e[0], torch.Tensor)]
    if isinstance(value, dict):
        features = value.get("penultimate_hidden_states")
    else:
        features = getattr(value, "penultimate_hidden_states", None)
    return [features] if isinstance(features, torch.Tensor) else []


def check_finite_input(name: str, kind: str, value) -> None:
    """Raise a ValueError naming the input when a FLOAT is NaN / infinite or a tensor input holds such values.

    ComfyUI's /prompt accepts JSON NaN, which passes every min / max check (NaN compares false)."""
    if kind == "FLOAT":
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise ValueError(f"{name} is {value}; expected a finite number (the prompt sent NaN or infinity)")
        return
    if not all(all_finite(tensor) for tensor in _checked_tensors(kind, value)):
        raise ValueError(f"{name} holds NaN or infinite values; expected a finite {kind} (check the node that "
                         "made it, or the file it was read from)")


def finite_input_types(node_class: type) -> dict[str, str]:
    """The inputs of a node checked for non-finite values: {input name: ComfyUI type}."""
    spec = node_class.INPUT_TYPES()
    return {name: entry[0] for section in ("required", "optional") for name, entry in spec.get(section, {}).items()
            if isinstance(entry[0], str) and entry[0] in FINITE_INPUT_TYPES}


def guard_finite_inputs(node_class: type) -> None:
    """Wrap the node's FUNCTION so that every FLOAT and tensor input is checked by `check_finite_input` first.

    Applied to every node of the pack when it is registered (nodes/__init__.py), so new nodes are covered too."""
    function = vars(node_class).get(node_class.FUNCTION) or getattr(node_class, node_class.FUNCTION)
    if getattr(function, "checks_finite_inputs", None) is node_class:
        return
    signature = inspect.signature(function)
    types: dict[str, str] | None = None  # read from INPUT_TYPES at the first run (it may list model folders)

    @functools.wraps(function)
    def checked(self, *args, **kwargs):
        nonlocal types
        if types is None:
            types = finite_input_types(node_class)
        given = signature.bind_partial(self, *args, **kwargs).arguments
        for name, kind in types.items():
            if name in given:
                check_finite_input(name, kind, given[name])
        return function(self, *args, **kwargs)

    checked.checks_finite_inputs = node_class
    setattr(node_class, node_class.FUNCTION, checked)


ABSENT_KEY = "wan_animate_absent"  # CONDITIONING metadata: why this entry holds no prompt (a placeholder of zeros)


def absent_conditioning(like: torch.Tensor, reason: str) -> list:
    """A CONDITIONING of zeros shaped like `like` [1, L, C] that the pack's nodes read as "no prompt", because
    `reason` (other nodes see zeros, as before)."""
    return [[torch.zeros_like(like), {ABSENT_KEY: reason}]]


def absent_reason(conditioning) -> str | None:
    """Why a CONDITIONING made by `absent_conditioning` holds no prompt; None for a real one."""
    entry = conditioning[0] if isinstance(conditioning, (list, tuple)) and conditioning else None
    if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], dict):
        return entry[1].get(ABSENT_KEY)
    return None


def conditioning_tokens(conditioning, name: str) -> torch.Tensor:
    """The umT5 embeddings [L, 4096] inside a ComfyUI CONDITIONING (CLIPTextEncode with the 'wan' CLIP)."""
    entry = conditioning[0] if isinstance(conditioning, (list, tuple)) and conditioning else None
    tokens = entry[0] if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], dict) else None
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or tokens.shape[0] != 1:
        raise ValueError(f"{name}: expected a CONDITIONING from CLIPTextEncode (a list of [embeddings [1, tokens, "
                         f"4096], {{...}}]); found {describe(conditioning)}")
    return tokens[0].float()


def clip_features(clip_vision_output) -> torch.Tensor:
    """CLIP ViT-H penultimate features [1, 257, 1280] from a CLIP_VISION_OUTPUT (CLIPVisionEncode, crop 'none')."""
    if isinstance(clip_vision_output, dict):
        features = clip_vision_output.get("penultimate_hidden_states")
    else:
        features = getattr(clip_vision_output, "penultimate_hidden_states", None)
    if not isinstance(features, torch.Tensor) or features.ndim != 3 or features.shape[1] != 257:
        found = describe(clip_vision_output if features is None else features)
        raise ValueError(f"clip_vision_output: expected the CLIP_VISION_OUTPUT of CLIPVisionEncode with "
                         f"clip_vision_h.safetensors (penultimate features [1, 257, 1280]); found {found}")
    return features[:1].float()


def _size(frames: torch.Tensor) -> str:
    return f"{frames.shape[2]}x{frames.shape[1]}"


def check_frames(mode: str, pose_video, face_video, background_video=None, mask=None) -> None:
    """Every frame input of the Embeds node: IMAGE / MASK tensors with pose_video's frame count (and size for the
    Replacement inputs); sides multiples of 16."""
    for name, value in (("pose_video", pose_video), ("face_video", face_video)):
        if not isinstance(value, torch.Tensor) or value.ndim != 4 or value.shape[-1] not in (3, 4):
            raise ValueError(f"{name}: expected an IMAGE [frames, height, width, 3]; found {describe(value)}")
    count, height, width = pose_video.shape[:3]
    if count == 0:
        raise ValueError("pose_video has 0 frames; at least 1 is needed")
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(f"pose_video is {_size(pose_video)}; both sides must be multiples of {SIZE_MULTIPLE} "
                         "(the Preprocess node's outputs are)")
    frame_inputs = [("face_video", face_video)]
    if mode == "replace":
        if not isinstance(background_video, torch.Tensor) or background_video.ndim != 4:
            raise ValueError(f"background_video: expected an IMAGE [frames, height, width, 3]; found "
                             f"{describe(background_video)}")
        if not isinstance(mask, torch.Tensor) or mask.ndim != 3:
            raise ValueError(f"mask: expected a MASK [frames, height, width]; found {describe(mask)}")
        frame_inputs += [("background_video", background_video), ("mask", mask)]
        if float(mask.max()) <= 0:
            raise ValueError("mask is 0 everywhere, so Replacement would replace nothing: connect the mask of a Wan "
                             "Animate Preprocess run in 'replace' mode")
    for name, value in frame_inputs:
        if value.shape[0] != count:
            raise ValueError(f"{name} has {value.shape[0]} frames; expected {count}, as many as pose_video: "
                             "connect outputs of the same Preprocess run")
        if name != "face_video" and tuple(value.shape[1:3]) != (height, width):
            raise ValueError(f"{name} is {_size(value)}; expected {width}x{height}, the size of pose_video")


def fit_reference(reference: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The reference IMAGE's first frame [H, W, 3] at height x width: unchanged when it already is, else fitted with
    black padding (the official padding_resize)."""
    if not isinstance(reference, torch.Tensor) or reference.ndim != 4 or reference.shape[0] == 0:
        raise ValueError(f"reference: expected an IMAGE [1, height, width, 3]; found {describe(reference)}")
    if tuple(reference.shape[1:3]) == (height, width):
        return reference[0, ..., :3]
    return u8_to_image(padding_resize(image_to_u8(reference[:1], "reference")[0], height, width))


def check_against_model(inputs: AnimateInputs, config: WanAnimateConfig) -> None:
    """The job's embeddings and face crops against what the DiT reads (text / CLIP widths, face crop size)."""
    scheduled = [(f"positive (frame {start})", tokens) for start, tokens in inputs.prompt_schedule or ()]
    for name, tokens in (("positive", inputs.context), ("negative", inputs.context_null), *scheduled):
        if tokens is None:
            continue
        if tokens.shape[-1] != config.text_dim:
            raise ValueError(f"{name}: text embeddings are {tokens.shape[-1]} wide; this model reads "
                             f"{config.text_dim} (CLIPTextEncode with the umT5-XXL 'wan' text encoder)")
        if tokens.shape[0] > config.text_len:
            raise ValueError(f"{name}: the prompt has {tokens.shape[0]} tokens; this model reads at most "
                             f"{config.text_len}: shorten it")
    if inputs.clip_fea.shape[-1] != config.clip_dim:
        raise ValueError(f"clip_vision_output: CLIP features are {inputs.clip_fea.shape[-1]} wide; this model reads "
                         f"{config.clip_dim} (CLIPVisionEncode with clip_vision_h.safetensors)")
    face_size = config.face_size
    if tuple(inputs.face.shape[1:3]) != (face_size, face_size):
        raise ValueError(f"face_video is {_size(inputs.face)}; this model reads {face_size}x{face_size} face crops "
                         "(Wan Animate Face Crops / Preprocess make them)")


def check_sampler_settings(inputs: AnimateInputs, cfg: float, segment_length: int, guide_frames: int,
                           absent_negative: str | None = None) -> None:
    """The Sampler's own inputs: segment_length 4k+1 above guide_frames; a negative prompt when cfg > 1
    (`absent_negative`: why the connected negative holds none, e.g. an embeddings file without context_null)."""
    if segment_length < 5 or (segment_length - 1) % 4:
        raise ValueError(f"segment_length is {segment_length}; expected 4k+1 frames (5, 9, ..., 77, 81)")
    if guide_frames >= segment_length:
        raise ValueError(f"guide_frames is {guide_frames}; expected fewer than segment_length ({segment_length})")
    if cfg > 1 and absent_negative:
        raise ValueError(f"cfg is {cfg} (> 1), which needs a negative prompt, but the connected negative has none: "
                         f"{absent_negative}; save context_null in that file, connect a CLIPTextEncode negative to "
                         "Wan Animate Embeds, or set cfg to 1")
    if cfg > 1 and inputs.context_null is None:
        raise ValueError(f"cfg is {cfg} (> 1), which needs a negative prompt: connect 'negative' on Wan Animate "
                         "Embeds, or set cfg to 1")
