"""The Wan-Animate DiT on tiny random models: shapes, both conditioning modes, input checks, face-adapter locality,
precision handling, and the official parameter layout of the released configuration."""
from __future__ import annotations

import pytest
import torch

from helpers_dit import build_tiny_dit, face_frames_for, run_dit, tiny_config, tiny_inputs
from wan_animate.model.dit import WanAnimateConfig, WanAnimateDiT
from wan_animate.model.face_adapter import FaceBlock


@pytest.fixture(scope="module")
def model() -> WanAnimateDiT:
    return build_tiny_dit(seed=0)


@pytest.mark.parametrize("mode", ["animate", "replace"])
@pytest.mark.parametrize("frames,height,width", [(3, 4, 6), (4, 6, 4)])
def test_forward_shapes_both_modes(model, mode, frames, height, width):
    inputs = tiny_inputs(frames=frames, height=height, width=width, mode=mode)
    motion_vec = model.encode_face(inputs["face_pixels"])
    assert motion_vec.shape == (1, frames, model.config.face_heads + 1, model.config.dim)
    out = run_dit(model, inputs)
    assert out.shape == (16, frames, height, width)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_modes_and_conditions_change_the_prediction(model):
    animate, replace = tiny_inputs(mode="animate"), tiny_inputs(mode="replace")
    assert not torch.equal(animate["y"][4:, 1:], replace["y"][4:, 1:])
    assert (run_dit(model, animate) - run_dit(model, replace)).abs().max() > 1e-3
    other_pose = dict(animate, pose_latents=animate["pose_latents"] + 1)
    assert (run_dit(model, animate) - run_dit(model, other_pose)).abs().max() > 1e-3


def test_motion_vec_reference_slot_is_zero_and_reused_results_identical(model):
    inputs = tiny_inputs()
    motion_vec = model.encode_face(inputs["face_pixels"])
    assert torch.count_nonzero(motion_vec[:, 0]) == 0 and motion_vec[:, 1:].abs().max() > 0
    with torch.no_grad():
        args = [inputs[k] for k in ("x", "t", "context", "clip_fea", "y", "pose_latents")]
        assert torch.equal(model(*args, motion_vec), model(*args, motion_vec))
        assert torch.equal(model(*args, motion_vec), run_dit(model, inputs))


def test_motion_features_run_in_chunks_of_eight_like_one_batch(model):
    faces = tiny_inputs(frames=5)["face_pixels"]  # 13 face frames: chunks of 8 and 5
    assert faces.shape[2] == face_frames_for(5) == 13
    with torch.no_grad():
        chunked = model.motion_features(faces)
        whole = model.motion_encoder(faces[0].transpose(0, 1))
    assert chunked.shape == (13, model.config.motion_encoder_dim)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_face_block_attends_only_within_each_latent_frame():
    torch.manual_seed(0)
    block = FaceBlock(dim=16, num_heads=2).eval()
    frames, tokens_per_frame = 3, 6
    x = torch.randn(1, frames * tokens_per_frame, 16)
    motion = torch.randn(1, frames, 5, 16)
    changed = motion.clone()
    changed[:, 1] += 1.0
    with torch.no_grad():
        delta = (block(x, changed) - block(x, motion)).abs().amax(dim=-1)[0]  # [frames * tokens]
    per_frame = delta.view(frames, tokens_per_frame)
    assert per_frame[1].min() > 0
    assert per_frame[0].max() == 0 and per_frame[2].max() == 0


def test_bf16_weights_compute_close_to_float32(model):
    inputs = tiny_inputs()
    reference = run_dit(model, inputs)
    bf16 = build_tiny_dit(seed=0).to(torch.bfloat16)
    assert bf16.compute_dtype == torch.bfloat16
    assert bf16.encode_face(inputs["face_pixels"]).dtype == torch.bfloat16
    out = run_dit(bf16, inputs)
    assert out.dtype == torch.float32
    assert (out - reference).abs().max() < 0.05 * reference.abs().max()


@pytest.mark.parametrize(
    "name,change,message",
    [
        ("y", lambda t: t[:19], "in_dim"),
        ("pose_latents", lambda t: t[:, :1], "pose_latents must be"),
        ("context", lambda t: torch.zeros(600, t.shape[1]), "context must be"),
        ("x", lambda t: t[..., :5], "x and y"),
        ("t", lambda t: t.repeat(2), "t must be"),
        ("clip_fea", lambda t: t[0], "clip_fea must be"),
    ],
)
def test_bad_inputs_are_named(model, name, change, message):
    inputs = tiny_inputs()
    motion_vec = model.encode_face(inputs["face_pixels"])
    inputs[name] = change(inputs[name])
    with pytest.raises(ValueError, match=message):
        model(inputs["x"], inputs["t"], inputs["context"], inputs["clip_fea"], inputs["y"], inputs["pose_latents"],
              motion_vec)


def test_motion_vec_frames_must_match_latent_frames(model):
    inputs = tiny_inputs(frames=4)
    wrong = model.encode_face(tiny_inputs(frames=3)["face_pixels"])
    with pytest.raises(ValueError, match="motion_vec must be"):
        model(inputs["x"], inputs["t"], inputs["context"], inputs["clip_fea"], inputs["y"], inputs["pose_latents"],
              wrong)
    with pytest.raises(ValueError, match="face_pixels must be"):
        model.encode_face(torch.zeros(1, 3, 5, 8, 8))


def test_released_configuration_has_the_official_layout():
    with torch.device("meta"):
        model = WanAnimateDiT(WanAnimateConfig())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["patch_embedding.weight"] == (5120, 36, 1, 2, 2)
    assert shapes["pose_patch_embedding.weight"] == (5120, 16, 1, 2, 2)
    assert shapes["blocks.39.ffn.0.weight"] == (13824, 5120)
    assert shapes["blocks.0.modulation"] == (1, 6, 5120)
    assert shapes["head.head.weight"] == (64, 5120)
    assert shapes["face_adapter.fuser_blocks.7.q_norm.weight"] == (128,)
    assert shapes["face_adapter.fuser_blocks.7.linear1_kv.weight"] == (10240, 5120)
    assert shapes["face_encoder.conv1_local.conv.weight"] == (4096, 512, 3)
    assert shapes["motion_encoder.enc.net_app.convs.8.weight"] == (512, 512, 4, 4)
    assert shapes["motion_encoder.dec.direction.weight"] == (512, 20)
    assert shapes["img_emb.proj.1.weight"] == (1280, 1280)
    assert "blocks.40.ffn.0.weight" not in shapes and "face_adapter.fuser_blocks.8.linear2.weight" not in shapes
    assert WanAnimateConfig().face_size == 512 and tiny_config().face_size == 16
    assert isinstance(model.blocks, torch.nn.ModuleList) and len(model.blocks) == 40
