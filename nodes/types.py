"""The pack's own ComfyUI types and the small records that travel on those links."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from wan_animate.pipeline.generate import AnimateInputs
from wan_animate.preprocess.detector import PersonDetector
from wan_animate.preprocess.pose_model import WholeBodyPoseModel

WAN_MODEL = "WANANIMATE_MODEL"
WAN_VAE = "WANANIMATE_VAE"
POSE_MODELS = "WANANIMATE_POSE_MODELS"
POSES = "WANANIMATE_POSES"
SAM2 = "WANANIMATE_SAM2"
EMBEDS = "WANANIMATE_EMBEDS"
PROMPTS = "WANANIMATE_PROMPTS"


@dataclass(frozen=True)
class PoseModels:
    detector: PersonDetector
    pose_model: WholeBodyPoseModel


@dataclass(frozen=True)
class Sam2Checkpoint:
    path: str
    device: str


@dataclass(frozen=True)
class Embeds:
    """Everything the sampler needs besides the models: the job's inputs and its mode."""

    mode: str
    inputs: AnimateInputs


@dataclass(frozen=True)
class PromptSchedule:
    """Encoded prompts per segment: (first driving frame, umT5 embeddings [L, 4096]), ascending from frame 0."""

    entries: tuple[tuple[int, torch.Tensor], ...]
