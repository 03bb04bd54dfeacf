"""Generation nodes: gather the job's inputs (embeds), then sample the whole video with long-video chaining."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import replace

import torch

from wan_animate.distributed.engine import workers_for
from wan_animate.loading.model_handle import DiTHandle
from wan_animate.pipeline.conditioning import MODES
from wan_animate.pipeline.colour_anchors import COLOUR_ANCHORS, COLOUR_METHODS
from wan_animate.pipeline.drift_plot import drift_plot
from wan_animate.pipeline.generate import AnimateInputs, GenerationSettings, generate, video_to_image
from wan_animate.model.vae_coding import VAECoder
from wan_animate.pipeline.resume import models_identity, module_fingerprint
from wan_animate.runtime.memory import estimate_activation_bytes, format_bytes, module_bytes, token_count
from wan_animate.runtime.oom import explain_oom
from wan_animate.sampling.preview import latent_preview
from wan_animate.sampling.schedulers import SCHEDULERS

from .checks import (absent_reason, check_against_model, check_frames, check_sampler_settings, clip_features,
                     conditioning_tokens, describe, fit_reference)
from .comfy_compat import (free_memory, output_path, pinning_policy, preview_max_side, progress_callback,
                           throw_if_interrupted, torch_device, track_resident_model)
from .types import EMBEDS, PROMPTS, WAN_MODEL, WAN_VAE, Embeds, PromptSchedule

CATEGORY = "WanAnimate/generation"
log = logging.getLogger(__name__)


class WanAnimateEmbeds:
    """Collect the job: mode, prompt embeddings, CLIP features and the preprocessed frames."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mode": (list(MODES), {"default": "animate"}),
                "positive": (f"CONDITIONING,{PROMPTS}", {"tooltip": "CLIPTextEncode with the umT5 'wan' text "
                                                                    "encoder, or Prompt Schedule (a prompt per "
                                                                    "segment)"}),
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
        absent_negative = None if negative is None else absent_reason(negative)
        if absent_negative:
            negative = None
        inputs = AnimateInputs(
            reference=fit_reference(reference, *pose_video.shape[1:3]),
            pose=pose_video[..., :3],
            face=face_video[..., :3],
            context=_first_prompt(positive),
            clip_fea=clip_features(clip_vision_output),
            context_null=None if negative is None else conditioning_tokens(negative, "negative"),
            background=None if mode == "animate" else background_video[..., :3],
            person_mask=None if mode == "animate" else mask,
            prompt_schedule=_prompt_schedule(positive),
        )
        return (Embeds(mode, inputs, absent_negative),)


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
                "shift": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 100.0, "step": 0.1,
                                    "tooltip": "shift of the noise schedule: above 0, 5 = official"}),
                "scheduler": (list(SCHEDULERS), {"default": "dpm++", "tooltip": "dpm++ (2M) / unipc: the official "
                              "solvers; euler; euler_a: stochastic; lightx2v / lightx2v_sde: the timesteps of "
                              "step-distill LoRAs (4 steps, shift 5, cfg 1)"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
                "cfg": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 20.0, "step": 0.1,
                                  "tooltip": "> 1: guidance with the negative prompt and a blank face (slower)"}),
                "segment_length": ("INT", {"default": 77, "min": 5, "max": 401, "step": 4,
                                           "tooltip": "frames per segment (4k+1)"}),
                "guide_frames": (["1", "5"], {"default": "1", "tooltip": "frames of the previous segment that guide "
                                                                   "the next"}),
            },
            "optional": {
                "face_cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                       "tooltip": "extra guidance on the facial expression only (1 = off, "
                                                  "< 1 weaker expression)"}),
                "colour_correction": ("BOOLEAN", {"default": False,
                                                  "tooltip": "correct each segment's colours against "
                                                             "colour_anchor"}),
                "colour_anchor": (list(COLOUR_ANCHORS), {"default": "previous", "tooltip": "what colours are "
                                  "matched to: the previous segment (chained), the first segment, the reference "
                                  "image, or (Replacement) the driving video outside the mask"}),
                "colour_method": (list(COLOUR_METHODS), {"default": "mean_std_rgb", "tooltip": "mean and std per "
                                  "channel in RGB or Lab, or histogram matching"}),
                "colour_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                              "tooltip": "0 = as generated, 1 = fully corrected"}),
                "resume_dir": ("STRING", {"default": "", "tooltip": "folder inside output/ keeping finished "
                                                                    "segments; a re-run with the same inputs, "
                                                                    "settings and models resumes there"}),
                "cache_threshold": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                              "tooltip": "step caching: skip model calls whose predicted output "
                                                         "change is below this fraction (0 = off; ~0.05 skips "
                                                         "some steps; quality not validated on real weights)"}),
                "start_frames": ("IMAGE", {"tooltip": "continue an earlier result: its frames (at least the last "
                                                      "guide_frames); frame_offset = how many it has"}),
                "frame_offset": ("INT", {"default": 0, "min": 0, "max": 1_000_000,
                                         "tooltip": "make the frames from this driving-video frame on (with "
                                                    "start_frames: continue after them; without: start fresh "
                                                    "there)"}),
                **_branch_inputs("pose", "scale of the pose video's pull on the body (1 = official)"),
                **_branch_inputs("face", "scale of the face adapter (1 = official; lower it when the face "
                                         "drifts from the character)"),
            },
        }

    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("frames", "colour_drift")
    OUTPUT_TOOLTIPS = ("the generated frames", "chart of each segment's colour drift before and after correction")
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    def sample(self, model: DiTHandle, vae, embeds: Embeds, steps, shift, scheduler, seed, cfg, segment_length,
               guide_frames, face_cfg=1.0, colour_correction=False, colour_anchor="previous",
               colour_method="mean_std_rgb", colour_strength=1.0, resume_dir="", cache_threshold=0.0,
               start_frames=None, frame_offset=0, pose_strength=1.0, pose_start=0.0, pose_end=1.0, face_strength=1.0,
               face_start=0.0, face_end=1.0):
        check_sampler_settings(embeds.inputs, cfg, segment_length, int(guide_frames), embeds.absent_negative)
        resume_folder = output_path(resume_dir, "resume_dir") if resume_dir else None
        settings = GenerationSettings(
            mode=embeds.mode, clip_len=segment_length, refert_num=int(guide_frames), solver=scheduler, steps=steps,
            shift=shift, guide_scale=cfg, face_guide_scale=face_cfg, seed=seed,
            colour_correction=colour_correction, resume_dir=resume_folder,
            models=_models_identity(model, vae) if resume_folder else "",
            cache_threshold=cache_threshold,
            colour_anchor=colour_anchor, colour_method=colour_method, colour_strength=colour_strength,
            frame_offset=frame_offset, pose_strength=pose_strength, pose_start=pose_start, pose_end=pose_end,
            face_strength=face_strength, face_start=face_start, face_end=face_end,
        )
        settings.validate()
        device = torch_device()
        height, width = embeds.inputs.reference.shape[:2]
        tokens = token_count(segment_length, height, width)
        workspace = vae.workspace_bytes(segment_length, height, width)
        if model.options.gpus > 1:
            workers = workers_for(model, device)
            config = workers.config
            weight_bytes = workers.rank_weight_bytes if workers.sharded else workers.model_bytes  # on GPU 0
            session = workers.session(model.loras, tokens, device)
            tokens = -(-tokens // model.options.gpus)  # per GPU
        else:
            config = model.model().config
            weight_bytes = 0 if model.is_resident(device) else module_bytes(model.model())  # kept from the last run
            if device.type == "cuda":
                vae, workspace = _vae_that_fits(model, vae, device, tokens, (segment_length, height, width))
            session = model.activate(device, tokens, workspace, pinning_policy())
        check_against_model(embeds.inputs, config)
        inputs = embeds.inputs if start_frames is None else dataclasses.replace(
            embeds.inputs, start_frames=start_frames[..., :3])
        activations = estimate_activation_bytes(tokens, config.dim, config.ffn_dim)
        keep = None if model.options.gpus > 1 else model.model()
        free_memory(weight_bytes + max(activations, workspace), device, keep=keep)
        progress = _progress_bar(preview_max_side())
        drift: list = []
        oom_settings = {"offload_blocks": model.options.offload, "weight_storage": model.options.storage,
                        "resolution": f"{width}x{height}", "segment_length": segment_length}
        try:
            with explain_oom("sampling", oom_settings), session as dit:
                video = generate(dit, vae, inputs, settings, callback=progress, interrupt=throw_if_interrupted,
                                 device=device, colour_report=drift)
        finally:  # a model kept on the GPU (also after an error or a cancel) is listed so that ComfyUI may evict it
            if keep is not None:
                track_resident_model(keep, device, module_bytes(keep))
        return (video_to_image(video), _drift_chart(drift, settings))


def _drift_chart(report: list, settings: GenerationSettings) -> torch.Tensor:
    """The colour-drift chart as an IMAGE [1, H, W, 3]."""
    title = (f"colour drift per segment (0-255 levels), anchor {settings.colour_anchor}, {settings.colour_method}, "
             f"strength {settings.colour_strength:g}")
    chart = drift_plot(report if settings.colour_correction else [], title)
    return torch.from_numpy(chart.copy()).float().div(255)[None]


def _first_prompt(positive) -> torch.Tensor:
    """The prompt embeddings of a CONDITIONING, or those of a Prompt Schedule's frame 0."""
    if isinstance(positive, PromptSchedule):
        return positive.entries[0][1]
    return conditioning_tokens(positive, "positive")


def _prompt_schedule(positive) -> list[tuple[int, torch.Tensor]] | None:
    """A Prompt Schedule with more than one prompt as the pipeline's prompt_schedule; else None (one prompt)."""
    if isinstance(positive, PromptSchedule) and len(positive.entries) > 1:
        return list(positive.entries)
    return None


def _branch_inputs(name: str, tooltip: str) -> dict:
    """Optional `<name>_strength`, `<name>_start`, `<name>_end` inputs of one DiT branch (see strengths.py)."""
    fraction = {"min": 0.0, "max": 1.0, "step": 0.01}
    return {
        f"{name}_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05, "tooltip": tooltip}),
        f"{name}_start": ("FLOAT", {"default": 0.0, **fraction,
                                    "tooltip": f"fraction of the steps where {name}_strength starts (before: off)"}),
        f"{name}_end": ("FLOAT", {"default": 1.0, **fraction,
                                  "tooltip": f"fraction of the steps where {name}_strength ends (after: off)"}),
    }


def _models_identity(model: DiTHandle, vae) -> str:
    """What the resume key needs to know of the models: the DiT file, storage and LoRA stack, and the VAE's weights
    (a sampled fingerprint: the loader keeps no file name), dtype and coding options."""
    vae_identity = {"weights": module_fingerprint(vae.vae), "tiled": vae.tiled, "tile": vae.tile,
                    "overlap": vae.overlap}
    return models_identity(model.identity(), vae_identity)


def _vae_that_fits(model: DiTHandle, vae: VAECoder, device: torch.device, tokens: int,
                   video: tuple[int, int, int]) -> tuple[VAECoder, int]:
    """The VAE coder to use beside the placed model, and its workspace: the given one, or the same VAE tiled when
    untiled coding (e.g. ~21 GiB for a float32 decode at 1280x720) would not fit next to the model but tiled does."""
    workspace = vae.workspace_bytes(*video)
    if vae.tiled or model.fits(device, tokens, workspace):
        return vae, workspace
    tiled = replace(vae, tiled=True)
    tiled_workspace = tiled.workspace_bytes(*video)
    if not model.fits(device, tokens, tiled_workspace):
        return vae, workspace  # the plan reports what does not fit
    log.info("VAE: untiled coding needs %s beside the model, which does not fit; coding in tiles of %d latent "
             "cells (%s) instead", format_bytes(workspace), tiled.tile, format_bytes(tiled_workspace))
    return tiled, tiled_workspace


def _progress_bar(preview_side: int | None):
    """A pipeline step callback driving one ComfyUI progress bar for the whole job, with a latent preview of at most
    `preview_side` pixels per side after every step (none when `preview_side` is None)."""
    from PIL import Image

    bar = None

    def on_step(step: int, total: int, x0: torch.Tensor) -> None:
        nonlocal bar
        if bar is None:
            bar = progress_callback(total)
        preview = None if preview_side is None else ("JPEG", Image.fromarray(latent_preview(x0)), preview_side)
        bar(step, preview)

    return on_step


NODE_CLASS_MAPPINGS = {
    "WanAnimateEmbeds": WanAnimateEmbeds,
    "WanAnimateSampler": WanAnimateSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "WanAnimateEmbeds": "Wan Animate Embeds",
    "WanAnimateSampler": "Wan Animate Sampler",
}
