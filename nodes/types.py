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

    def release(self) -> None:
        """End both ONNX sessions after a pass (their CUDA arenas would otherwise stay allocated while sampling)."""
        self.detector.release()
        self.pose_model.release()


@dataclass(frozen=True)
class Sam2Checkpoint:
    path: str
    device: str


@dataclass(frozen=True)
class Embeds:
    """Everything the sampler needs besides the models: the job's inputs and its mode; `absent_negative` says why
    the connected negative holds no prompt (an embeddings file without context_null), None otherwise."""

    mode: str
    inputs: AnimateInputs
    absent_negative: str | None = None


@dataclass(frozen=True)
class PromptSchedule:
    """Encoded prompts per segment: (first driving frame, umT5 embeddings [L, 4096]), ascending from frame 0."""

    entries: tuple[tuple[int, torch.Tensor], ...]
