"""Generation nodes: gather the job's inputs (embeds), then sample the whole video with long-video chaining."""
from __future__ import annotations

import torch

from wan_animate.loading.model_handle import DiTHandle
from wan_animate.pipeline.conditioning import MODES
from wan_animate.pipeline.generate import SIZE_MULTIPLE, AnimateInputs, GenerationSettings, generate, video_to_image
from wan_animate.preprocess.video import padding_resize
from wan_animate.runtime.memory import estimate_activation_bytes, module_bytes, token_count
from wan_animate.runtime.oom import explain_oom
from wan_animate.sampling.preview import latent_preview
from wan_animate.sampling.schedulers import SCHEDULERS

from .comfy_compat import free_memory, output_path, progress_callback, throw_if_interrupted, torch_device
from .convert import image_to_u8, u8_to_image
from .types import EMBEDS, WAN_MODEL, WAN_VAE, Embeds

CATEGORY = "WanAnimate/generation"


def describe(value) -> str:
    """A short account of what a node input holds, for error messages: `a list of 1 items starting with ...`."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        first = f" starting with {describe(value[0])}" if value else ""
        return f"a {type(value).__name__} of {len(value)} items{first}"
    return "nothing" if value is None else f"a {type(value).__name__}"


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


def check_against_model(inputs: AnimateInputs, config) -> None:
    """The job's embeddings and face crops against what the DiT reads (text / CLIP widths, face crop size)."""
    for name, tokens in (("positive", inputs.context), ("negative", inputs.context_null)):
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


class WanAnimateEmbeds:
    """Collect the job: mode, prompt embeddings, CLIP features and the preprocessed frames."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mode": (list(MODES), {"default": "animate"}),
                "positive": ("CONDITIONING", {"tooltip": "CLIPTextEncode with the umT5 'wan' text encoder"}),
                "clip_vision_output": ("CLIP_VISION_OUTPUT", {"tooltip": "CLIPVisionEncode of the reference "
                                                                         "(clip_vision_h, crop none)"}),
                "reference": ("IMAGE", {"tooltip": "the character at the generation size"}),
                "pose_video": ("IMAGE",),
                "face_video": ("IMAGE", {"tooltip": "512x512 face crops, one per frame"}),
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": "needed when the sampler's cfg > 1"}),
                "background_video": ("IMAGE", {"tooltip": "Replacement: the video with the person zeroed"}),
                "mask": ("MASK", {"tooltip": "Replacement: 1 where the person is replaced"}),
            },
        }

    RETURN_TYPES = (EMBEDS,)
    RETURN_NAMES = ("embeds",)
    FUNCTION = "build"
    CATEGORY = CATEGORY

    def build(self, mode, positive, clip_vision_output, reference, pose_video, face_video, negative=None,
              background_video=None, mask=None):
        if mode == "replace" and (background_video is None or mask is None):
            raise ValueError("Replacement mode needs background_video and mask (from Wan Animate Preprocess); "
                             f"found background_video: {describe(background_video)}, mask: {describe(mask)}")
        check_frames(mode, pose_video, face_video, background_video, mask)
        inputs = AnimateInputs(
            reference=fit_reference(reference, *pose_video.shape[1:3]),
            pose=pose_video[..., :3],
            face=face_video[..., :3],
            context=conditioning_tokens(positive, "positive"),
            clip_fea=clip_features(clip_vision_output),
            context_null=None if negative is None else conditioning_tokens(negative, "negative"),
            background=None if mode == "animate" else background_video[..., :3],
            person_mask=None if mode == "animate" else mask,
        )
        return (Embeds(mode, inputs),)


class WanAnimateSampler:
    """Denoise the whole video segment by segment (77 frames each by default, chained by guide frames)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (WAN_MODEL,),
                "vae": (WAN_VAE,),
                "embeds": (EMBEDS,),
                "steps": ("INT", {"default": 20, "min": 1, "max": 200, "tooltip": "4-8 with a step-distill LoRA"}),
                "shift": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 100.0, "step": 0.1}),
                "scheduler": (list(SCHEDULERS), {"default": "dpm++"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
                "cfg": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 20.0, "step": 0.1,
                                  "tooltip": "> 1: guidance with the negative prompt and a blank face (slower)"}),
                "segment_length": ("INT", {"default": 77, "min": 5, "max": 401, "step": 4,
                                           "tooltip": "frames per segment (4k+1)"}),
                "guide_frames": (["1", "5"], {"default": "1", "tooltip": "frames of the previous segment that guide "
                                                                   "the next"}),
            },
            "optional": {
                "face_cfg": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 20.0, "step": 0.1,
                                       "tooltip": "extra guidance on the facial expression only (1 = off)"}),
                "colour_correction": ("BOOLEAN", {"default": False,
                                                  "tooltip": "match each segment's colours to the previous one"}),
                "resume_dir": ("STRING", {"default": "", "tooltip": "folder (inside output/) keeping finished "
                                                                    "segments; a re-run with the same inputs resumes "
                                                                    "there"}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    def sample(self, model: DiTHandle, vae, embeds: Embeds, steps, shift, scheduler, seed, cfg, segment_length,
               guide_frames, face_cfg=1.0, colour_correction=False, resume_dir=""):
        if segment_length < 5 or (segment_length - 1) % 4:
            raise ValueError(f"segment_length is {segment_length}; expected 4k+1 frames (5, 9, ..., 77, 81)")
        if int(guide_frames) >= segment_length:
            raise ValueError(f"guide_frames is {guide_frames}; expected fewer than segment_length ({segment_length})")
        if cfg > 1 and embeds.inputs.context_null is None:
            raise ValueError(f"cfg is {cfg} (> 1), which needs a negative prompt: connect 'negative' on Wan Animate "
                             "Embeds, or set cfg to 1")
        settings = GenerationSettings(
            mode=embeds.mode, clip_len=segment_length, refert_num=int(guide_frames), solver=scheduler, steps=steps,
            shift=shift, guide_scale=cfg, face_guide_scale=face_cfg, seed=seed,
            colour_correction=colour_correction, resume_dir=output_path(resume_dir) if resume_dir else None,
        )
        settings.validate()
        device = torch_device()
        height, width = embeds.inputs.reference.shape[:2]
        tokens = token_count(segment_length, height, width)
        dit = model.model()
        config = dit.config
        check_against_model(embeds.inputs, config)
        free_memory(module_bytes(dit) + estimate_activation_bytes(tokens, config.dim, config.ffn_dim), device)
        progress = _progress_bar()
        oom_settings = {"offload_blocks": model.options.offload, "weight_storage": model.options.storage,
                        "resolution": f"{width}x{height}", "segment_length": segment_length}
        with explain_oom("sampling", oom_settings), model.activate(device, tokens) as dit:
            video = generate(dit, vae, embeds.inputs, settings, callback=progress, interrupt=throw_if_interrupted,
                             device=device)
        return (video_to_image(video),)


def _progress_bar():
    """A pipeline step callback driving ComfyUI's progress bar with a latent preview."""
    from PIL import Image

    bars: dict[int, object] = {}

    def on_step(step: int, total: int, x0: torch.Tensor) -> None:
        bar = bars.setdefault(total, progress_callback(total))
        bar(step, ("JPEG", Image.fromarray(latent_preview(x0)), 512))

    return on_step


NODE_CLASS_MAPPINGS = {
    "WanAnimateEmbeds": WanAnimateEmbeds,
    "WanAnimateSampler": WanAnimateSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "WanAnimateEmbeds": "Wan Animate Embeds",
    "WanAnimateSampler": "Wan Animate Sampler",
}
