"""Pose and face strength: the DiT's scaled branches against models with scaled weights, and the step windows."""
from __future__ import annotations

import copy

import pytest
import torch

from helpers_dit import build_tiny_dit, tiny_inputs
from helpers_vae import random_vae
from test_pipeline_generate import make_inputs, settings
from wan_animate.model.dit import WanAnimateDiT
from wan_animate.model.vae_config import VAEConfig
from wan_animate.pipeline.generate import GenerationSettings, generate
from wan_animate.pipeline.strengths import step_index, strength_at

def tiny_vae():
    return random_vae(VAEConfig(dim=4, z_dim=16, dim_mult=(1, 1, 1, 1), num_res_blocks=1, attn_scales=(),
                                temperal_downsample=(False, True, True)))


ARGS = ("x", "t", "context", "clip_fea", "y", "pose_latents")


@pytest.fixture(scope="module")
def model() -> WanAnimateDiT:
    return build_tiny_dit(seed=0)


@pytest.fixture(scope="module")
def inputs(model) -> dict:
    values = tiny_inputs(frames=3)
    values["motion_vec"] = model.encode_face(values["face_pixels"])
    return values


def forward(model: WanAnimateDiT, inputs: dict, **strengths) -> torch.Tensor:
    with torch.no_grad():
        return model(*[inputs[k] for k in ARGS], inputs["motion_vec"], **strengths)


def scaled_copy(model: WanAnimateDiT, scale_pose: float = 1.0, scale_face: float = 1.0) -> WanAnimateDiT:
    """The model with its pose embedding / face-adapter output layers multiplied (weights and biases)."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.pose_patch_embedding.parameters():
            p.mul_(scale_pose)
        for block in other.face_adapter.fuser_blocks:
            for p in block.linear2.parameters():
                p.mul_(scale_face)
    return other


def test_strength_one_is_the_official_forward(model, inputs):
    assert torch.equal(forward(model, inputs, pose_strength=1.0, face_strength=1.0), forward(model, inputs))


def test_pose_strength_zero_is_a_forward_without_pose(model, inputs):
    without = forward(model, dict(inputs, pose_latents=None))
    assert torch.equal(forward(model, inputs, pose_strength=0.0), without)
    torch.testing.assert_close(forward(scaled_copy(model, scale_pose=0.0), inputs), without, rtol=1e-5, atol=1e-5)
    assert (without - forward(model, inputs)).abs().max() > 1e-3


def test_face_strength_zero_is_a_forward_without_face_adapter(model, inputs):
    without = forward(model, dict(inputs, motion_vec=None))
    assert torch.equal(forward(model, inputs, face_strength=0.0), without)
    torch.testing.assert_close(forward(scaled_copy(model, scale_face=0.0), inputs), without, rtol=1e-5, atol=1e-5)
    assert (without - forward(model, inputs)).abs().max() > 1e-3


@pytest.mark.parametrize("pose,face", [(0.5, 1.0), (2.0, 1.0), (1.0, 0.3), (1.0, 1.7), (0.4, 1.5)])
def test_strengths_scale_the_branches_linearly(model, inputs, pose, face):
    ours = forward(model, inputs, pose_strength=pose, face_strength=face)
    torch.testing.assert_close(ours, forward(scaled_copy(model, pose, face), inputs), rtol=1e-4, atol=1e-4)
    assert (ours - forward(model, inputs)).abs().max() > 1e-4


@pytest.mark.parametrize("start,end,steps,active", [
    (0.0, 1.0, 4, [0, 1, 2, 3]), (0.0, 0.5, 4, [0, 1]), (0.5, 1.0, 4, [2, 3]), (0.2, 0.6, 5, [1, 2]),
    (0.3, 0.3, 4, []), (0.0, 1.0, 1, [0]),
])
def test_step_windows(start, end, steps, active):
    assert [i for i in range(steps) if strength_at(0.7, start, end, i, steps) == 0.7] == active
    assert all(strength_at(0.7, start, end, i, steps) == 0 for i in range(steps) if i not in active)


def test_step_index_finds_each_timestep():
    timesteps = torch.tensor([999.0, 871.5, 500.0, 12.0])
    assert [step_index(timesteps, t.reshape(1)) for t in timesteps] == [0, 1, 2, 3]


@pytest.mark.parametrize("field,value,message", [
    ("pose_strength", 2.5, "pose_strength"), ("face_strength", -0.1, "face_strength"),
    ("pose_start", 0.8, "pose_start"), ("face_end", 1.2, "face_end"),
])
def test_bad_strength_settings_are_named(field, value, message):
    settings = GenerationSettings(**{field: value, **({"pose_end": 0.5} if field == "pose_start" else {})})
    with pytest.raises(ValueError, match=message):
        settings.validate()


class RecordingDiT:
    """Wraps a DiT, recording the (pose, face) strengths of every call."""

    def __init__(self, dit):
        self.dit, self.seen = dit, []

    def encode_face(self, face):
        return self.dit.encode_face(face)

    def __call__(self, *args, pose_strength=1.0, face_strength=1.0):
        self.seen.append((pose_strength, face_strength))
        return self.dit(*args, pose_strength=pose_strength, face_strength=face_strength)


def test_generate_applies_the_windows_per_step(model):
    recorder = RecordingDiT(model)
    job = settings(steps=4, guide_scale=2.0, pose_strength=0.5, pose_end=0.5, face_strength=1.5, face_start=0.25)
    generate(recorder, tiny_vae(), make_inputs(5), job)
    per_step = [(0.5, 0.0), (0.5, 1.5), (0.0, 1.5), (0.0, 1.5)]
    assert recorder.seen == [s for s in per_step for _ in range(2)]  # cond and uncond passes alike
