"""On CUDA (NCCL): workers with FSDP2-sharded blocks give the in-process forward of the same GPU.

With one GPU the group has one rank (the FSDP2 hooks, the CUDA device mesh and NCCL's all-gather still run); with two
or more visible GPUs, two workers split the weights and the tokens.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from conftest import assert_close_golden
from test_distributed import FLOAT32, golden_dit_path, step_inputs
from test_pipeline_golden import REL
from wan_animate.distributed.engine import DiTWorkers
from wan_animate.loading.dit import load_dit

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_sharded_workers_on_cuda_equal_the_in_process_forward():
    devices = [f"cuda:{index}" for index in range(min(2, torch.cuda.device_count()))]
    model = load_dit(golden_dit_path(), device="cuda:0", dtype=torch.float32)
    inputs = step_inputs(model.config, 3, 2, 6, seed=3)
    with torch.no_grad():
        expected = model(*[value.to("cuda:0") for value in inputs]).cpu()
    del model
    group = DiTWorkers(golden_dit_path(), replace(FLOAT32, shard_weights="on"), devices)
    try:
        with group.session((), tokens=9, device="cuda:0") as dit:
            ours = dit(*[value.to("cuda:0") for value in inputs]).cpu()
        assert group.sharded is True
    finally:
        group.shutdown()
    assert_close_golden(ours, expected, REL, f"sharded forward on {len(devices)} GPU worker(s)")
