"""The whole job from files, without ComfyUI: character image + driving video + embeddings file -> an mp4.

    from wan_animate.api import animate_files
    animate_files(character="character.png", driving_video="driving.mp4", embeddings="embeds_00001.safetensors",
                  dit=..., vae=..., detector=..., pose_model=..., out="result.mp4")

The embeddings file holds the umT5 prompt / negative prompt embeddings and the CLIP features of the character
(ComfyUI's Save Embeddings node writes it); every model file is one of the README's table. The DiT is loaded whole
onto `device` (no block offloading here: use ComfyUI's nodes for small GPUs).
"""
from __future__ import annotations

import numbers
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .io.embeddings import read_embeddings
from .io.video import Sound, read_video, write_video
from .loading.dit import load_dit
from .loading.vae import load_vae
from .pipeline.generate import AnimateInputs, GenerationSettings, generate, video_to_image
from .preprocess.audio import trim_waveform
from .preprocess.detector import PersonDetector
from .preprocess.pose_model import WholeBodyPoseModel
from .preprocess.prepare import MaskSettings, prepare_inputs
from .preprocess.video import check_generation_fps, driving_frames_for_fps


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3]."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"character image '{path}' does not exist")
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except UnidentifiedImageError as error:
        raise ValueError(f"'{path}' is not an image file PIL can read") from error


def check_size_argument(name: str, value) -> None:
    """`width` / `height` of animate_files: a whole number of at least 16 (their product is the target area)."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value < 16:
        shown = value if isinstance(value, numbers.Real) else repr(value)
        raise ValueError(f"{name} is {shown}; expected a whole number of at least 16 (pixels; width x height is "
                         f"the generation area)")


def animate_files(
    character: str | os.PathLike,
    driving_video: str | os.PathLike,
    embeddings: str | os.PathLike,
    dit: str | os.PathLike,
    vae: str | os.PathLike,
    detector: str | os.PathLike,
    pose_model: str | os.PathLike,
    out: str | os.PathLike,
    mode: str = "animate",
    width: int = 1280,
    height: int = 720,
    fps: float = 30.0,
    steps: int = 20,
    seed: int = 0,
    cfg: float = 1.0,
    segment_length: int = 77,
    retarget: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> str:
    """Animate (`mode` "animate") or replace ("replace") with the official preprocessing and sampling, and write
    the result with the driving video's sound to the new file `out` (never replaced). Returns `out`.

    width x height: the generation area (the aspect comes from the image, or the video for Replacement). fps: the
    driving video is resampled to it by timestamp (-1 keeps its rate). Every number is checked before a file is
    read. device: default CUDA when present, else the CPU; dtype: the DiT's compute dtype, default bf16 on a GPU
    and float32 on the CPU.
    """
    if os.path.exists(out):
        raise FileExistsError(f"'{out}' exists already; choose another output file")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    settings = GenerationSettings(mode=mode, clip_len=segment_length, steps=steps, guide_scale=cfg, seed=seed)
    settings.validate()
    check_size_argument("width", width)
    check_size_argument("height", height)
    check_generation_fps(fps)
    job = read_embeddings(embeddings)
    if cfg > 1 and job.context_null is None:
        raise ValueError(f"cfg {cfg} > 1 needs a negative prompt, and '{embeddings}' has no context_null")
    image = read_image(character)
    video = read_video(driving_video)
    indices, fps = driving_frames_for_fps(len(video.frames), video.fps, fps)

    onnx_device = "cuda" if device.type == "cuda" else "cpu"
    prepared = prepare_inputs(image, video.frames[indices], PersonDetector(detector, device=onnx_device),
                              WholeBodyPoseModel(pose_model, device=onnx_device), mode=mode, area=width * height,
                              retarget=retarget, mask=MaskSettings())
    inputs = AnimateInputs(
        reference=torch.from_numpy(prepared.reference), pose=torch.from_numpy(prepared.pose),
        face=torch.from_numpy(prepared.face), context=job.context, clip_fea=job.clip_fea,
        context_null=job.context_null,
        background=None if prepared.background is None else torch.from_numpy(prepared.background),
        person_mask=None if prepared.mask is None else torch.from_numpy(prepared.mask),
    )
    model = load_dit(str(dit), device=device, dtype=dtype)
    coder = load_vae(str(vae), device=device, dtype=torch.float32)
    with torch.no_grad():
        result = video_to_image(generate(model, coder, inputs, settings, device=device))  # [F, H, W, 3] in 0..1
    frames = (result * 255).round().to(torch.uint8).cpu().numpy()
    sound = None
    if video.sound is not None:
        samples = trim_waveform(video.sound.samples, video.sound.sample_rate, len(frames), fps)
        sound = Sound(samples, video.sound.sample_rate)
    return write_video(out, frames, fps, sound)
