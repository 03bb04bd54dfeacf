"""The whole Wan-Animate generation from preprocessed inputs, without ComfyUI: segment, condition, denoise, decode,
chain.

Equivalent maths to the official `WanAnimate.generate` (Wan2.2, wan/animate.py); see segments.py for the chaining and
conditioning.py for the model's conditioning. Pixels are given as ComfyUI IMAGE tensors (float 0..1) or uint8 0..255;
the output is a video [3, F, H, W] in [-1, 1] (`video_to_image` turns it into an IMAGE [F, H, W, 3] in 0..1).
"""
from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Sequence
import dataclasses
from dataclasses import asdict, dataclass
from typing import Protocol, Union

import torch

from ..sampling.loop import denoise
from ..sampling.schedulers import SCHEDULERS, make_scheduler
from ..sampling.step_cache import StepCache
from .color import colour_drift
from .colour_anchors import ColourAnchor, SegmentDrift, check_colour_settings
from .continuation import continuation_begin, driving_from, first_segment_number, guide_from_start_frames
from .conditioning import MODES, VideoVAE, pose_latents, reference_condition, segment_condition
from .resume import SegmentStore, job_key
from .prompts import context_at
from .segments import Segment, check_segment_settings, latent_frames, plan_segments
from .strengths import check_branch, step_index, strength_at

log = logging.getLogger(__name__)

LATENT_CHANNELS = 16
SPATIAL_STRIDE = 8
SIZE_MULTIPLE = 16

NoiseSource = Union[Callable[[int, tuple], torch.Tensor], Sequence[torch.Tensor], None]
StepCallback = Callable[[int, int, torch.Tensor], None]


class AnimateDiT(Protocol):
    def encode_face(self, face: torch.Tensor) -> torch.Tensor: ...

    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        clip_fea: torch.Tensor,
        y: torch.Tensor,
        pose_latents: torch.Tensor | None,
        motion_vec: torch.Tensor | None,
        pose_strength: float = 1.0,
        face_strength: float = 1.0,
    ) -> torch.Tensor: ...


@dataclass
class AnimateInputs:
    """Preprocessed inputs of one job. Pixels: float 0..1 (ComfyUI IMAGE) or uint8; all frames the same size.

    reference [H, W, 3]: the character, already at the video's size. pose [F, H, W, 3]: skeleton frames.
    face [F, 512, 512, 3]: face crops. background [F, H, W, 3] and person_mask [F, H, W] (1 = the person to replace):
    Replacement only. context [L, 4096] / context_null [L', 4096]: umT5 embeddings of the prompt / negative prompt
    (context_null is needed when guide_scale > 1). clip_fea [1, 257, 1280]: CLIP features of the reference.
    prompt_schedule: optional prompts per segment, [(first driving frame, context [L, 4096])] ascending from frame 0;
    each segment then uses the one active at its first frame instead of `context` (see prompts.py).
    start_frames [n, H, W, 3]: an earlier result to continue from (with GenerationSettings.frame_offset; see
    continuation.py).
    """

    reference: torch.Tensor
    pose: torch.Tensor
    face: torch.Tensor
    context: torch.Tensor
    clip_fea: torch.Tensor
    context_null: torch.Tensor | None = None
    background: torch.Tensor | None = None
    person_mask: torch.Tensor | None = None
    prompt_schedule: list[tuple[int, torch.Tensor]] | None = None
    start_frames: torch.Tensor | None = None


# The numeric settings with the range named when one is not a finite number (the other checks of `validate` hold
# the ranges themselves); counts and the seed must be whole numbers.
NUMBER_RANGES = {
    "clip_len": "a whole number 4k+1 with k >= 1 (5, 9, ..., 77, 81)",
    "refert_num": "a whole number, 1 or 5",
    "steps": "a whole number of at least 1",
    "seed": "a whole number",
    "frame_offset": "a whole number of 0 or more",
    "shift": "a number above 0",
    "guide_scale": "a finite number (1 or less: the conditional pass only)",
    "face_guide_scale": "0 or more (1 = off)",
    "cache_threshold": "0 (off) or a positive fraction such as 0.05",
    "colour_strength": "0 to 1",
    "pose_strength": "0 to 2",
    "face_strength": "0 to 2",
    "pose_start": "a fraction 0 to 1",
    "pose_end": "a fraction 0 to 1",
    "face_start": "a fraction 0 to 1",
    "face_end": "a fraction 0 to 1",
}
WHOLE_NUMBER_SETTINGS = ("clip_len", "refert_num", "steps", "seed", "frame_offset")
NODE_NAMES = {"guide_scale": "cfg", "face_guide_scale": "face_cfg"}  # the Sampler node's names (api.py: cfg)


@dataclass
class GenerationSettings:
    """Settings of one job (official defaults).

    guide_scale > 1: classifier-free guidance whose unconditional pass uses context_null and an all-black face
    (the official behaviour; <= 1 runs the conditional pass only). face_guide_scale != 1: an extra pass with the
    prompt but a black face, adding (face_guide_scale - 1) * (cond - cond_without_face) (not in the official code).
    colour_correction: correct each segment's colour against colour_anchor with colour_method and colour_strength
    (default: match it to the previous segment in the guidance frames; see colour_anchors.py).
    resume_dir: folder where finished segments are kept so that a re-run continues (see resume.py).
    models: identity of the DiT file, its storage, LoRAs and the VAE (`resume.models_identity`), part of the resume key.
    cache_threshold > 0: step caching (sampling/step_cache.py) per guidance branch and segment; model calls whose
    predicted relative output change stays below it are skipped (0 = off, every call computed); the step where the
    pose or face strength changes (a strength window's start or end) and the one after it are always computed.
    frame_offset: make the frames from this driving frame on (a continuation; see continuation.py).
    pose_strength / face_strength (0..2, 1 = official): scale of the pose latents' tokens / the face adapter's
    residuals, applied in the steps between the fractions *_start and *_end (outside: left out; see strengths.py).
    """

    mode: str = "animate"
    clip_len: int = 77
    refert_num: int = 1
    solver: str = "dpm++"
    steps: int = 20
    shift: float = 5.0
    guide_scale: float = 1.0
    face_guide_scale: float = 1.0
    seed: int = 0
    colour_correction: bool = False
    resume_dir: str | None = None
    models: str = ""
    cache_threshold: float = 0.0
    frame_offset: int = 0
    colour_anchor: str = "previous"
    colour_method: str = "mean_std_rgb"
    colour_strength: float = 1.0
    pose_strength: float = 1.0
    pose_start: float = 0.0
    pose_end: float = 1.0
    face_strength: float = 1.0
    face_start: float = 0.0
    face_end: float = 1.0

    def validate(self) -> None:
        """Raise ValueError naming the first setting out of its range (non-finite numbers included)."""
        self._check_numbers()
        if not self.shift > 0:
            raise ValueError(f"shift is {self.shift}; expected {NUMBER_RANGES['shift']}")
        if self.mode not in MODES:
            raise ValueError(f"mode is {self.mode!r}; expected one of {MODES}")
        check_segment_settings(self.clip_len, self.refert_num)
        if self.solver not in SCHEDULERS:
            raise ValueError(f"solver is {self.solver!r}; expected one of {sorted(SCHEDULERS)}")
        if self.steps < 1:
            raise ValueError(f"steps is {self.steps}; expected at least 1")
        if not self.cache_threshold >= 0:
            raise ValueError(f"cache_threshold is {self.cache_threshold}; expected 0 (off) or a positive fraction")
        if self.face_guide_scale < 0:
            raise ValueError(f"face_guide_scale (face_cfg) is {self.face_guide_scale}; expected 0 or more (1 = off)")
        check_colour_settings(self.colour_anchor, self.colour_method, self.colour_strength, self.mode)
        check_branch("pose", self.pose_strength, self.pose_start, self.pose_end)
        check_branch("face", self.face_strength, self.face_start, self.face_end)

    def _check_numbers(self) -> None:
        """Every numeric setting is a finite number, and a whole one where a count or seed is expected."""
        for name, expected in NUMBER_RANGES.items():
            value = getattr(self, name)
            whole = name in WHOLE_NUMBER_SETTINGS
            finite = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            if not finite or (whole and value != int(value)):
                label = f"{name} ({NODE_NAMES[name]})" if name in NODE_NAMES else name
                raise ValueError(f"{label} is {value}; expected {expected}")

    def branch_strengths(self, step: int) -> tuple[float, float]:
        """(pose, face) strength at denoising step `step`."""
        s = self
        return (strength_at(s.pose_strength, s.pose_start, s.pose_end, step, s.steps),
                strength_at(s.face_strength, s.face_start, s.face_end, step, s.steps))


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float 0..1 -> float32 in [-1, 1] (uint8 as u8 / 127.5 - 1, like the official code)."""
    if pixels.dtype == torch.uint8:
        return (pixels.double() / 127.5 - 1).float()
    return pixels.float() * 2 - 1


def mask_to_unit(mask: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 or float 0..1 -> float32 0..1."""
    if mask.dtype == torch.uint8:
        return (mask.double() / 255).float()
    return mask.float()


def video_to_image(video: torch.Tensor) -> torch.Tensor:
    """[3, F, H, W] in [-1, 1] -> ComfyUI IMAGE [F, H, W, 3] in 0..1."""
    return ((video.float() + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0).contiguous()


def _gather_video(frames: torch.Tensor, sources: Sequence[int]) -> torch.Tensor:
    """Frames [F, H, W, 3] picked by index -> [3, n, H, W] in [-1, 1]."""
    picked = frames[torch.as_tensor(sources, device=frames.device)]
    return to_unit_range(picked).permute(3, 0, 1, 2).contiguous().cpu()


def _check_frames(name: str, frames: torch.Tensor, count: int, height: int | None, width: int | None) -> None:
    expected = f"[{count}, {height or 'H'}, {width or 'W'}, 3]"
    if frames.ndim != 4 or frames.shape[0] != count or frames.shape[-1] != 3:
        raise ValueError(f"{name} has shape {tuple(frames.shape)}; expected {expected}")
    if height is not None and tuple(frames.shape[1:3]) != (height, width):
        raise ValueError(f"{name} has shape {tuple(frames.shape)}; expected {expected}")


def check_inputs(inputs: AnimateInputs, settings: GenerationSettings) -> None:
    """Raise ValueError naming the input whose shape or presence does not fit the settings."""
    if inputs.reference.ndim != 3 or inputs.reference.shape[-1] != 3:
        raise ValueError(f"reference has shape {tuple(inputs.reference.shape)}; expected [H, W, 3]")
    height, width = inputs.reference.shape[:2]
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(f"reference is {width}x{height}; both sides must be multiples of {SIZE_MULTIPLE}")
    count = inputs.pose.shape[0]
    _check_frames("pose", inputs.pose, count, height, width)
    _check_frames("face", inputs.face, count, None, None)
    if settings.mode == "replace":
        if inputs.background is None or inputs.person_mask is None:
            raise ValueError("replace mode needs background [F, H, W, 3] and person_mask [F, H, W]; one is missing")
        _check_frames("background", inputs.background, count, height, width)
        if tuple(inputs.person_mask.shape) != (count, height, width):
            raise ValueError(
                f"person_mask has shape {tuple(inputs.person_mask.shape)}; expected {(count, height, width)}"
            )
    if inputs.prompt_schedule:
        frames_at = [start for start, _ in inputs.prompt_schedule]
        if frames_at[0] != 0 or frames_at != sorted(set(frames_at)):
            raise ValueError(f"prompt_schedule starts at frames {frames_at}; expected distinct ascending frames from 0")
    if settings.guide_scale > 1 and inputs.context_null is None:
        raise ValueError(f"guide_scale is {settings.guide_scale} (> 1) but context_null (negative prompt) is missing")


class _Noise:
    """Initial noise per segment: the caller's (list or callable) or drawn in order from a seeded CPU generator."""

    def __init__(self, source: NoiseSource, seed: int, shape: tuple[int, ...]):
        self.source = source
        self.shape = shape
        self.generator = torch.Generator().manual_seed(seed)
        self.drawn = 0

    def __call__(self, index: int) -> torch.Tensor:
        if callable(self.source):
            noise = self.source(index, self.shape)
        elif self.source is not None:
            if index >= len(self.source):
                raise ValueError(f"noise list has {len(self.source)} tensors; segment {index} needs one")
            noise = self.source[index]
        else:
            while self.drawn <= index:  # segments skipped on resume still consume their draws
                noise = torch.randn(self.shape, generator=self.generator, dtype=torch.float32)
                self.drawn += 1
        if tuple(noise.shape) != self.shape:
            raise ValueError(f"noise for segment {index} has shape {tuple(noise.shape)}; expected {self.shape}")
        return noise.float()


def _module_device(module: object) -> torch.device:
    """The module's `device` attribute, else its first parameter's device, else the CPU."""
    device = getattr(module, "device", None)
    if isinstance(device, torch.device):
        return device
    parameters = getattr(module, "parameters", None)
    if parameters is not None:
        for parameter in parameters():
            return parameter.device
    return torch.device("cpu")


def _open_store(
    inputs: AnimateInputs, settings: GenerationSettings, noise: NoiseSource
) -> SegmentStore | None:
    if settings.resume_dir is None:
        return None
    job = {k: v for k, v in asdict(settings).items() if k != "resume_dir"}
    if not settings.cache_threshold:
        del job["cache_threshold"]  # off: the key of jobs stored before the option existed
    tensors = [(name, value) for name, value in vars(inputs).items() if name != "prompt_schedule"]
    for start, context in inputs.prompt_schedule or ():
        tensors.append((f"prompt_from_{start}", context))
    if isinstance(noise, Sequence):
        tensors += [(f"noise_{k}", n) for k, n in enumerate(noise)]
    job["noise"] = "callable" if callable(noise) else ("given" if noise is not None else "seeded")
    return SegmentStore(settings.resume_dir, job_key(job, tensors))


class _SegmentModel:
    """The guided velocity of one segment: conditions fixed, face motion encoded once per guidance branch."""

    def __init__(
        self,
        dit: AnimateDiT,
        inputs: AnimateInputs,
        settings: GenerationSettings,
        y: torch.Tensor,
        pose: torch.Tensor,
        face: torch.Tensor,
        device: torch.device,
        black_face_cache: dict,
        timesteps: torch.Tensor,
        context: torch.Tensor,
    ):
        self.dit = dit
        self.settings = settings
        self.timesteps = timesteps
        self.context = context.to(device)
        self.context_null = None if inputs.context_null is None else inputs.context_null.to(device)
        self.clip_fea = inputs.clip_fea.to(device)
        self.y = y
        self.pose = pose
        self.motion = dit.encode_face(face.to(device))
        needs_black_face = settings.guide_scale > 1 or settings.face_guide_scale != 1
        self.motion_black = None
        if needs_black_face:  # the same for every segment of the job: encoded once
            key = tuple(face.shape)
            if key not in black_face_cache:
                black_face_cache[key] = dit.encode_face(torch.full_like(face, -1).to(device))
            self.motion_black = black_face_cache[key]
        self.caches: dict[str, StepCache] = {}
        if settings.cache_threshold > 0:
            self.caches = {branch: StepCache(settings.cache_threshold, settings.steps)
                           for branch in ("cond", "uncond", "without_face")}

    def _run(self, branch: str, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, motion: torch.Tensor,
             strengths: tuple[float, float]) -> torch.Tensor:
        def compute() -> torch.Tensor:
            if strengths == (1.0, 1.0):  # the official model: called exactly as without the controls
                return self.dit(x, t, context, self.clip_fea, self.y, self.pose, motion).float()
            pose_strength, face_strength = strengths
            return self.dit(x, t, context, self.clip_fea, self.y, self.pose, motion, pose_strength=pose_strength,
                            face_strength=face_strength).float()

        # the strengths are the only input besides x and t that changes between the steps of one branch and segment
        return self.caches[branch](x, compute, condition=strengths) if self.caches else compute()

    def reuse_counts(self) -> tuple[int, int]:
        """(model calls skipped by step caching, model calls in all) so far."""
        return sum(c.reused for c in self.caches.values()), sum(c.calls for c in self.caches.values())

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        strengths = self.settings.branch_strengths(step_index(self.timesteps, t))
        cond = self._run("cond", x, t, self.context, self.motion, strengths)
        velocity = cond
        if self.settings.guide_scale > 1:
            uncond = self._run("uncond", x, t, self.context_null, self.motion_black, strengths)
            velocity = uncond + self.settings.guide_scale * (cond - uncond)
        if self.settings.face_guide_scale != 1:
            without_face = self._run("without_face", x, t, self.context, self.motion_black, strengths)
            velocity = velocity + (self.settings.face_guide_scale - 1) * (cond - without_face)
        return velocity


def sampler_seed(seed: int, segment: int) -> int:
    """Seed of the noise a stochastic sampler adds in segment `segment` (a stream apart from the initial noise's)."""
    return (seed * 1_000_003 + 7919 * (segment + 1)) % (1 << 63)


def _append_frames(video: torch.Tensor, filled: int, frames: torch.Tensor) -> int:
    """Copy as many of `frames` [3, n, H, W] as fit after the first `filled` frames of `video`; the new count."""
    count = min(frames.shape[1], video.shape[1] - filled)
    video[:, filled : filled + count] = frames[:, :count]
    return filled + count


def _segment_progress(
    callback: StepCallback | None, index: int, steps: int, total: int
) -> Callable[[int, torch.Tensor], None] | None:
    """The loop's per-step hook for segment `index`, reporting the step count over the whole job."""
    if callback is None:
        return None
    return lambda i, preview: callback(index * steps + i + 1, total, preview)


def _record(trace: dict | None, name: str, value: torch.Tensor | float) -> None:
    if trace is not None:
        trace[name] = value.detach().float().cpu().clone() if isinstance(value, torch.Tensor) else value


@torch.no_grad()
def generate(
    dit: AnimateDiT,
    vae: VideoVAE,
    inputs: AnimateInputs,
    settings: GenerationSettings,
    noise: NoiseSource = None,
    callback: StepCallback | None = None,
    interrupt: Callable[[], None] | None = None,
    trace: dict | None = None,
    device: torch.device | str | None = None,
    colour_report: list[SegmentDrift] | None = None,
) -> torch.Tensor:
    """Generate the video: [3, F, H, W] in [-1, 1], F = the number of pose frames (minus settings.frame_offset).

    noise: initial latents per segment, [16, T, H/8, W/8] with T = (clip_len - 1) / 4 + 2: a list indexed by segment
    or a callable (segment index, shape) -> tensor; None draws them in order from torch.Generator().manual_seed(seed).
    In a continuation (frame_offset > 0) segment indices count from the whole job's (continuation.py).
    callback(step, total, x0_preview): after every denoising step; step counts 1..total over all segments.
    interrupt(): called before every model step; it stops the job by raising.
    trace: when given, filled with `timesteps` and per segment k `y_k`, `pose_latents_k`, `latent_k` (the decoded
    latents without the reference slot), `decoded_k`, and for k > 0 `guide_k` and `colour_drift_k` (before any
    correction); recording never changes the result.
    device: where the DiT runs (default: its `device` attribute, else the device of its first parameter).
    colour_report: when given and colour correction is on, extended with each corrected segment's drift.
    With settings.resume_dir, finished segments are reused when inputs, settings and a given noise list match; a
    noise callable is not part of that match (the same callable is assumed).
    """
    settings.validate()
    check_inputs(inputs, settings)
    device = torch.device(device) if device is not None else _module_device(dit)
    height, width = inputs.reference.shape[:2]
    lat_h, lat_w = height // SPATIAL_STRIDE, width // SPATIAL_STRIDE
    guided = inputs.start_frames is not None
    begin = continuation_begin(settings.frame_offset, settings.refert_num, guided, inputs.pose.shape[0])
    driving = driving_from(inputs, begin)
    frames = driving.pose.shape[0]
    plan = plan_segments(frames, settings.clip_len, settings.refert_num)
    tail: torch.Tensor | None = None
    if guided:  # the first segment is guided by the earlier result, like a later segment of a whole job
        tail = guide_from_start_frames(inputs.start_frames, settings.refert_num, height, width)
        plan[0] = dataclasses.replace(plan[0], guide_frames=settings.refert_num)
    first_number = first_segment_number(begin, settings.clip_len, settings.refert_num)
    noise_for = _Noise(noise, settings.seed, (LATENT_CHANNELS, latent_frames(settings.clip_len) + 1, lat_h, lat_w))
    store = _open_store(inputs, settings, noise)
    total_steps = settings.steps * len(plan)
    _record(trace, "timesteps", make_scheduler(settings.solver, settings.steps, settings.shift).timesteps)

    y_reference = None
    black_face_cache: dict = {}
    video = torch.empty(3, frames - plan[0].guide_frames, height, width)  # filled segment by segment; no padding
    filled = 0
    finished = store.finished_count() if store is not None else 0
    colour = _colour_anchor(settings, inputs)
    if colour is not None and guided:
        colour.remember_first(to_unit_range(inputs.start_frames).permute(3, 0, 1, 2))
    for segment in plan:
        if segment.index < finished:
            kept, tail = store.load(segment.index)
            if colour is not None:
                colour.remember_first(kept)
            filled = _append_frames(video, filled, kept)
            continue
        if y_reference is None:
            y_reference = reference_condition(vae, to_unit_range(inputs.reference).permute(2, 0, 1), device)
        decoded = _generate_segment(
            dit, vae, driving, settings, segment, y_reference, tail, noise_for(first_number + segment.index), device,
            _segment_progress(callback, segment.index, settings.steps, total_steps), interrupt, trace,
            black_face_cache, begin,
        )
        if tail is not None:
            head = decoded[:, : segment.guide_frames]
            _record(trace, f"colour_drift_{segment.index}", colour_drift(tail, head))
        if colour is not None:
            decoded = colour.correct(segment.index, decoded, segment.guide_frames, tail,
                                     *_segment_background(driving, settings, segment))
        _record(trace, f"decoded_{segment.index}", decoded)
        kept = decoded[:, segment.guide_frames :]
        tail = decoded[:, -settings.refert_num :]
        if store is not None:
            store.save(segment.index, kept, tail)
        filled = _append_frames(video, filled, kept)
    if colour is not None and colour_report is not None:
        colour_report.extend(colour.report)
    return video


def _colour_anchor(settings: GenerationSettings, inputs: AnimateInputs) -> ColourAnchor | None:
    if not settings.colour_correction:
        return None
    reference = to_unit_range(inputs.reference).permute(2, 0, 1) if settings.colour_anchor == "reference" else None
    return ColourAnchor(settings.colour_anchor, settings.colour_method, settings.colour_strength, reference)


def _segment_background(
    driving: AnimateInputs, settings: GenerationSettings, segment: Segment
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(background [3, F, H, W] in [-1, 1], person mask [F, H, W]) of the segment's frames for the background anchor."""
    if settings.colour_anchor != "background":
        return None, None
    mask = mask_to_unit(driving.person_mask[torch.as_tensor(segment.sources)]).cpu()
    return _gather_video(driving.background, segment.sources), mask


def _generate_segment(
    dit: AnimateDiT,
    vae: VideoVAE,
    inputs: AnimateInputs,
    settings: GenerationSettings,
    segment: Segment,
    y_reference: torch.Tensor,
    guide: torch.Tensor | None,
    noise: torch.Tensor,
    device: torch.device,
    on_step: Callable[[int, torch.Tensor], None] | None,
    interrupt: Callable[[], None] | None,
    trace: dict | None,
    black_face_cache: dict,
    begin: int = 0,
) -> torch.Tensor:
    """Denoise and decode one segment: its decoded frames [3, clip_len, H, W] in [-1, 1] (guidance frames included)."""
    height, width = inputs.reference.shape[:2]
    k = segment.index
    background = person_mask = None
    if settings.mode == "replace":
        background = _gather_video(inputs.background, segment.sources)
        person_mask = mask_to_unit(inputs.person_mask[torch.as_tensor(segment.sources)]).cpu()
    if guide is not None:
        _record(trace, f"guide_{k}", guide)
    y_segment = segment_condition(
        vae, guide, background, person_mask, len(segment.sources), height, width, device
    )
    y = torch.cat([y_reference, y_segment], dim=1)  # [20, 1 + T, h, w]
    pose = pose_latents(vae, _gather_video(inputs.pose, segment.sources), device)  # [16, T, h, w]
    face = _gather_video(inputs.face, segment.sources).unsqueeze(0)  # [1, 3, clip_len, 512, 512]
    _record(trace, f"y_{k}", y)
    _record(trace, f"pose_latents_{k}", pose)

    scheduler = make_scheduler(settings.solver, settings.steps, settings.shift, seed=sampler_seed(settings.seed, k))
    context = context_at(inputs.context, inputs.prompt_schedule, begin + segment.start)
    model = _SegmentModel(dit, inputs, settings, y, pose, face, device, black_face_cache, scheduler.timesteps, context)
    latents = denoise(model, noise.to(device), scheduler, on_step, interrupt)
    if model.caches:
        reused, calls = model.reuse_counts()
        log.info("step cache: segment %d skipped %d of %d model calls", k, reused, calls)
        _record(trace, f"cache_reused_{k}", reused)
    _record(trace, f"latent_{k}", latents[:, 1:])
    return vae.decode(latents[:, 1:].unsqueeze(0))[0].float().cpu()
