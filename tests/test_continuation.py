"""Continuing from a clip: a job split at a segment boundary and continued from its frames equals the whole job."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers_dit import build_tiny_dit
from test_pipeline_generate import CONFIG, make_inputs, settings
from test_strengths import tiny_vae
from wan_animate.pipeline.continuation import continuation_begin, guide_from_start_frames
from wan_animate.pipeline.generate import generate, video_to_image

REL = 5e-4  # the pipeline golden tolerance


@pytest.fixture(scope="module")
def models():
    return build_tiny_dit(seed=0, config=CONFIG), tiny_vae()


def first_frames(inputs, count: int):
    """The job on the first `count` driving frames only (what an earlier session ran)."""
    fields = ("pose", "face", "background", "person_mask")
    kept = {f: getattr(inputs, f)[:count] for f in fields if getattr(inputs, f) is not None}
    return dataclasses.replace(inputs, **kept)


@pytest.mark.parametrize("mode,clip_len,refert,frames,split,colour", [
    ("animate", 5, 1, 13, 5, False),   # segments keep [0, 5), [5, 9), [9, 13): split after the first
    ("replace", 5, 1, 13, 9, True),    # split after the second, colour correction across the split
    ("animate", 9, 5, 17, 9, False),   # 5 guide frames: keeps [0, 9), [9, 13), [13, 17)
])
def test_split_job_equals_whole_job(models, mode, clip_len, refert, frames, split, colour):
    dit, vae = models
    inputs = make_inputs(frames, mode)
    job = settings(mode=mode, clip_len=clip_len, refert_num=refert, colour_correction=colour)
    whole = generate(dit, vae, inputs, job)
    earlier = generate(dit, vae, first_frames(inputs, split), job)
    assert torch.equal(earlier, whole[:, :split])

    continued_inputs = dataclasses.replace(inputs, start_frames=video_to_image(earlier))
    later = generate(dit, vae, continued_inputs, dataclasses.replace(job, frame_offset=split))
    assert later.shape[1] == frames - split
    joined = torch.cat([earlier, later], dim=1)
    err = (joined - whole).abs().max().item()
    assert err <= REL * max(1.0, whole.abs().max().item()), err


def test_fresh_restart_from_an_offset_is_the_job_on_the_rest(models):
    dit, vae = models
    inputs = make_inputs(13)
    job = settings()
    rest = dataclasses.replace(inputs, pose=inputs.pose[4:], face=inputs.face[4:])
    redone = generate(dit, vae, inputs, dataclasses.replace(job, frame_offset=4))
    assert torch.equal(redone, generate(dit, vae, rest, job, noise=lambda k, shape: noise_of(job.seed, k + 1, shape)))


def noise_of(seed: int, index: int, shape) -> torch.Tensor:
    """The seeded noise the pipeline draws for segment `index` of a job."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(index + 1):
        noise = torch.randn(shape, generator=g)
    return noise


@pytest.mark.parametrize("offset,refert,guided,message", [(13, 1, True, "0 to 12"), (3, 5, True, "5 guide frames")])
def test_bad_offsets_are_named(offset, refert, guided, message):
    with pytest.raises(ValueError, match=message):
        continuation_begin(offset, refert, guided, 13)


def test_start_frames_of_another_size_are_named():
    with pytest.raises(ValueError, match="start_frames"):
        guide_from_start_frames(torch.rand(4, 16, 16, 3), 1, 32, 48)
    with pytest.raises(ValueError, match="at least 5"):
        guide_from_start_frames(torch.rand(2, 32, 48, 3), 5, 32, 48)
