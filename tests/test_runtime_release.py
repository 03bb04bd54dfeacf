"""Releasing a model gives its host memory back to the operating system, not only to the C heap."""
from __future__ import annotations

import gc
import os
import sys

import pytest
import torch
from safetensors.torch import save_file

from helpers_dit import build_tiny_dit, tiny_config
from wan_animate.loading.model_handle import DiTHandle, DiTOptions
from wan_animate.runtime.memory import module_bytes

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/statm")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_released_model_returns_its_host_memory(tmp_path):
    # weights of 8 MB each: below glibc's mmap threshold, so they live on the C heap, which keeps freed pages
    path = tmp_path / "dit.safetensors"
    model = build_tiny_dit(seed=1, config=tiny_config(dim=1024, ffn_dim=4096, num_heads=8, num_layers=4))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}, str(path))
    del model
    gc.collect()
    handle = DiTHandle(str(path), DiTOptions(dtype=torch.bfloat16))
    model_size = module_bytes(handle.model())
    loaded = rss_bytes()
    handle.release()
    assert loaded - rss_bytes() > model_size // 2, "the released model's host memory was not given back"
