"""Sequence-parallel sampling on CPU (gloo): 2 and 3 worker processes give the single-process result.

The workers serve the golden DiT; a forward with uneven token counts (padding, latent frames cut between ranks) equals
the in-process forward, also with pose / face strengths other than 1, and the whole generate() on each golden pipeline
case equals the golden video within the pipeline tolerance; generate() with strength windows on a tiny DiT equals the
in-process run. Also: an interrupt leaves the workers usable, a worker that fails or dies fails the call with a
clear message, and the next `shared_workers` call starts fresh workers.
"""
from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import assert_close_golden, golden_root, golden_section
from helpers_dit import build_tiny_dit
from test_pipeline_generate import CONFIG as TINY_CONFIG
from test_pipeline_generate import make_inputs, settings
from test_pipeline_golden import REL, golden_inputs, golden_settings
from test_strengths import tiny_vae
from wan_animate.distributed.engine import DiTWorkers, WorkerFailure, shared_workers, shutdown_all, worker_devices
from wan_animate.distributed.sharding import TokenShard
from wan_animate.distributed.weight_sharding import effective_setting, should_shard_weights
from wan_animate.loading.model_handle import DiTOptions
from wan_animate.pipeline.generate import generate
from wan_animate.runtime.memory import module_bytes

FLOAT32 = DiTOptions(dtype=torch.float32)


def golden_dit_path() -> str:
    return str(golden_section("dit") / "weights.safetensors")


@pytest.mark.parametrize("tokens, per_frame, world", [(9, 3, 2), (8, 4, 3), (12, 4, 3), (5, 5, 3), (2, 1, 3)])
def test_shards_cover_every_token_once_with_its_frame(tokens, per_frame, world):
    full = torch.arange(1, tokens + 1).reshape(1, tokens, 1).float()
    shards = [TokenShard(tokens, per_frame, rank, world) for rank in range(world)]
    joined = torch.cat([shard.take(full) for shard in shards], dim=1)
    assert joined.shape[1] == shards[0].padded >= tokens
    assert torch.equal(joined[0, :tokens, 0], full[0, :, 0]) and not joined[0, tokens:].any()
    frame_of = {}
    for shard in shards:
        for start, stop, frame, count in shard.frame_runs():
            assert (stop - start) % count == 0 or count == 1
            for local in range(start, stop):
                token = shard.start + local
                first = frame + (local - start) // per_frame if count > 1 else frame
                frame_of[token] = first
    assert frame_of == {token: token // per_frame for token in range(tokens)}


@pytest.fixture(scope="module", params=[2, 3], ids=lambda n: f"{n}workers")
def workers(request):
    group = DiTWorkers(golden_dit_path(), FLOAT32, ["cpu"] * request.param)
    yield group
    group.shutdown()


@pytest.fixture(scope="module")
def golden_dit():
    from wan_animate.loading.dit import load_dit

    return load_dit(golden_dit_path(), device="cpu", dtype=torch.float32)


def step_inputs(config, frames: int, height: int, width: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(16, frames, height, width, generator=gen),
        torch.tensor([613.0]),
        torch.randn(6, config.text_dim, generator=gen),
        torch.randn(1, 257, config.clip_dim, generator=gen),
        torch.randn(config.in_dim - 16, frames, height, width, generator=gen),
        torch.randn(16, frames - 1, height, width, generator=gen),
        torch.randn(1, frames, config.face_heads + 1, config.dim, generator=gen),
    ]


class Interrupted(Exception):
    pass


# (frames, h, w) latents: 9 tokens of 3 per frame, 8 tokens of 4 per frame: uneven over 2 and 3 ranks, frames cut
@pytest.mark.parametrize("grid", [(3, 2, 6), (2, 4, 4)], ids=lambda g: "x".join(map(str, g)))
def test_forward_equals_single_process(workers, golden_dit, grid):
    inputs = step_inputs(golden_dit.config, *grid, seed=sum(grid))
    expected = golden_dit(*inputs)
    with pytest.raises(Interrupted), workers.session((), tokens=8, device="cpu") as dit:
        dit(*inputs)
        raise Interrupted  # what the sampler's interrupt check does between two steps
    assert workers.alive, "an interrupt must leave the workers running"
    with workers.session((), tokens=8, device="cpu") as dit:
        ours = dit(*inputs)
        again = dit(inputs[0] * 0.5, *inputs[1:])  # conditions sent once, reused by the second step
    assert workers.sharded is False and workers.rank_weight_bytes == workers.model_bytes  # auto on the CPU: replicated
    assert_close_golden(ours, expected, REL, f"{workers.world_size} workers forward {grid}")
    assert_close_golden(again, golden_dit(inputs[0] * 0.5, *inputs[1:]), REL, "second step")


@pytest.mark.parametrize("face_strength", [0.0, 1.5])
def test_forward_with_strengths_equals_single_process(workers, golden_dit, face_strength):
    inputs = step_inputs(golden_dit.config, 3, 2, 6, seed=2)  # 9 tokens of 3 per frame: frames cut between ranks
    expected = golden_dit(*inputs, pose_strength=0.5, face_strength=face_strength)
    official = golden_dit(*inputs)
    assert (expected - official).abs().max() > 1e-2  # the strengths change the prediction
    with workers.session((), tokens=8, device="cpu") as dit:
        ours = dit(*inputs, pose_strength=0.5, face_strength=face_strength)
        back = dit(*inputs)  # the next step at strength 1, conditions reused
    name = f"{workers.world_size} workers, pose 0.5, face {face_strength:g}"
    assert_close_golden(ours, expected, REL, name)
    assert_close_golden(back, official, REL, f"{name}, then strength 1")


def test_an_input_given_as_none_is_none_on_the_workers_not_the_previous_tensor(workers, golden_dit):
    """pose_latents / motion_vec None leave that branch out, as in the single-process forward."""
    inputs = step_inputs(golden_dit.config, 3, 2, 6, seed=3)
    no_pose = inputs[:5] + [None, inputs[6]]
    no_face = inputs[:6] + [None]
    with workers.session((), tokens=8, device="cpu") as dit:
        full = dit(*inputs)
        without_pose = dit(*no_pose)
        without_face = dit(*no_face)
        again = dit(*inputs)
    name = f"{workers.world_size} workers"
    assert_close_golden(full, golden_dit(*inputs), REL, name)
    assert_close_golden(without_pose, golden_dit(*no_pose), REL, f"{name}, pose_latents None")
    assert_close_golden(without_face, golden_dit(*no_face), REL, f"{name}, motion_vec None")
    assert_close_golden(again, golden_dit(*inputs), REL, f"{name}, both again")


def test_generate_with_strength_windows_equals_single_process(tmp_path):
    model = build_tiny_dit(seed=0, config=TINY_CONFIG)
    path = tmp_path / "tiny_dit.safetensors"
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}, str(path))  # exact
    vae, inputs = tiny_vae(), make_inputs(5)
    # per step (pose, face): (0.5, 0), (0.5, 1.5), (0, 1.5), (0, 1.5); cond and uncond passes alike
    job = settings(steps=4, guide_scale=2.0, pose_strength=0.5, pose_end=0.5, face_strength=1.5, face_start=0.25)
    expected = generate(model, vae, inputs, job)
    assert (expected - generate(model, vae, inputs, settings(steps=4, guide_scale=2.0))).abs().max() > 1e-2
    group = DiTWorkers(str(path), FLOAT32, ["cpu"] * 2)
    try:
        with group.session((), tokens=64, device="cpu") as dit:
            video = generate(dit, vae, inputs, job, device="cpu")
    finally:
        group.shutdown()
    assert_close_golden(video, expected, REL, "generate with strength windows on 2 workers")


def golden_case(name: str) -> Path:
    case = golden_root() / "pipeline" / name
    if not (case / "meta.json").is_file():
        pytest.skip(f"golden pipeline case {case} is absent")
    return case


GENERATE_CASE = {2: "animate", 3: "replace"}  # each case once (the official 512-px face encoder is the costly part)


def test_generate_equals_golden(workers):
    from wan_animate.loading.vae import load_vae

    case = golden_case(GENERATE_CASE[workers.world_size])
    meta = json.loads((case / "meta.json").read_text())
    vae = load_vae(str((case / meta["vae"]).resolve()), dtype=torch.float32)
    noise_file = load_file(str(case / "noise.safetensors"))
    noise = [noise_file[f"noise_{k}"] for k in range(meta["segments"])]
    inputs = golden_inputs(golden_section("pipeline"), meta["mode"])
    golden = load_file(str(case / "outputs.safetensors"))
    with workers.session((), tokens=64, device="cpu") as dit:
        video = generate(dit, vae, inputs, golden_settings(meta), noise=noise, device="cpu")
    assert_close_golden(video, golden["video"], REL, f"{case.name} video on {workers.world_size} workers")


def test_worker_failure_and_death_fail_the_call_and_the_next_run_starts_fresh_workers(tmp_path):
    devices = worker_devices(2, "cpu")
    first = shared_workers(golden_dit_path(), FLOAT32, devices)
    config = first.config
    try:
        bad = step_inputs(config, 2, 4, 4, seed=0)
        bad[4] = bad[4][:, :1]  # y with one frame for two-frame latents: the model rejects it
        with first.session((), 8, "cpu") as dit, pytest.raises(WorkerFailure, match=r"worker \d \(cpu\) failed: "
                                                                                   r"ValueError: x and y must be"):
            dit(*bad)
        assert not first.alive

        second = shared_workers(golden_dit_path(), FLOAT32, devices)
        assert second is not first and second.alive
        os.kill(second._processes.processes[1].pid, signal.SIGKILL)
        with pytest.raises(WorkerFailure, match=r"worker 1 \(cpu\) died"):  # found by the session's start or step
            with second.session((), 8, "cpu") as dit:
                dit(*step_inputs(config, 2, 4, 4, seed=0))
        assert not second.alive
    finally:
        shutdown_all()


def test_worker_devices_check_the_request():
    assert worker_devices(3, "cpu") == ["cpu", "cpu", "cpu"]
    with pytest.raises(ValueError, match="gpus is 0"):
        worker_devices(0, "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="gpus is 2 but 0 CUDA GPU"):
            worker_devices(2, "cuda:0")


def test_sharded_weights_forward_equals_single_process(golden_dit):
    group = DiTWorkers(golden_dit_path(), replace(FLOAT32, shard_weights="on"), ["cpu"] * 2)
    try:
        inputs = step_inputs(golden_dit.config, 3, 2, 6, seed=1)
        with group.session((), tokens=8, device="cpu") as dit:
            ours = dit(*inputs)
            again = dit(inputs[0] * 0.5, *inputs[1:])
        assert group.sharded is True
        blocks = module_bytes(golden_dit.blocks)  # rank 0 keeps about half of them, the rest whole
        assert abs(group.rank_weight_bytes - (group.model_bytes - blocks / 2)) <= 0.05 * blocks
        assert_close_golden(ours, golden_dit(*inputs), REL, "2 workers, sharded weights")
        assert_close_golden(again, golden_dit(inputs[0] * 0.5, *inputs[1:]), REL, "sharded, second step")
        with pytest.raises(ValueError, match="LoRAs cannot be applied to weights sharded"):
            with group.session((("some_lora.safetensors", 1.0),), tokens=8, device="cpu"):
                pass
        assert group.alive
    finally:
        group.shutdown()


GIB = 1 << 30


def test_shard_weights_planner():
    # auto: shards on CUDA only when the whole model plus one forward's activations exceed the free memory
    assert should_shard_weights("auto", "cuda", 28 * GIB, 6 * GIB, 33 * GIB)
    assert not should_shard_weights("auto", "cuda", 28 * GIB, 4 * GIB, 33 * GIB)
    assert not should_shard_weights("auto", "cpu", 28 * GIB, 6 * GIB, None)
    assert should_shard_weights("on", "cpu", 1, 1, None) and not should_shard_weights("off", "cuda", 9 * GIB, 0, 1)
    # auto becomes off for LoRA jobs, fp8/GGUF weights and options that cannot shard; on with fp8/GGUF is refused
    assert effective_setting("auto", False, True, True) == "auto"
    assert [effective_setting("auto", *flags) for flags in [(True, True, True), (False, False, True),
                                                            (False, True, False)]] == ["off"] * 3
    assert effective_setting("on", True, True, True) == "on"  # the engine refuses the LoRAs with a message
    with pytest.raises(ValueError, match="shard_weights 'on' needs 16/32-bit float weights"):
        effective_setting("on", False, False, True)
    with pytest.raises(ValueError, match="shard_weights is 'yes'"):
        should_shard_weights("yes", "cuda", 1, 1, 1)
    with pytest.raises(ValueError, match="shard_weights 'on' needs weight storage 'default'"):
        DiTOptions(storage="fp8_e4m3fn", shard_weights="on")
    assert not DiTOptions(offload=4).can_shard_weights and DiTOptions(offload="auto").can_shard_weights
