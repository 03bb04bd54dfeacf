"""torch.compile of the transformer blocks: fp8 weights on GPUs whose Triton has no fp8 run uncompiled with a
warning, and the attention dispatch adds no graph break inside a compiled block (checked with dynamo on CPU)."""
from __future__ import annotations

import logging
import sys
import types

import pytest
import torch
from torch import nn

from helpers_dit import build_tiny_dit
from wan_animate.model.rope import rope_tables
from wan_animate.runtime import attention as attn
from wan_animate.runtime import compile as compile_module
from wan_animate.runtime import devices
from wan_animate.runtime.compile import compile_blocks, is_compiled, uncompile_blocks
from wan_animate.runtime.fp8 import FP8Linear

CUDA = torch.device("cuda", 0)


def fp8_blocks() -> nn.ModuleList:
    blocks = nn.ModuleList([nn.Sequential(nn.Linear(4, 4), FP8Linear(4, 4)) for _ in range(2)])
    for block in blocks:
        block[1].set_weight(torch.randn(4, 4))
    return blocks


@pytest.fixture
def fresh_warnings():
    compile_module._warned.clear()
    yield
    compile_module._warned.clear()


@pytest.mark.parametrize("capability", [(8, 0), (8, 6)])
def test_fp8_blocks_stay_uncompiled_without_triton_fp8(monkeypatch, caplog, fresh_warnings, capability):
    monkeypatch.setattr(devices, "cuda_capability", lambda device: capability)
    blocks = fp8_blocks()
    with caplog.at_level(logging.WARNING, logger=compile_module.__name__):
        assert compile_blocks(blocks, device=CUDA) is False
        assert compile_blocks(blocks, device=CUDA) is False
    assert not any(is_compiled(b) for b in blocks)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once, not at every run
    assert f"compute capability {capability[0]}.{capability[1]}" in warnings[0] and "uncompiled" in warnings[0]


def test_fp8_blocks_compile_where_triton_has_fp8_and_plain_blocks_everywhere(monkeypatch, fresh_warnings):
    monkeypatch.setattr(devices, "cuda_capability", lambda device: (8, 9))
    blocks = fp8_blocks()
    assert compile_blocks(blocks, device=CUDA) is True and all(is_compiled(b) for b in blocks)
    uncompile_blocks(blocks)
    monkeypatch.setattr(devices, "cuda_capability", lambda device: (8, 6))
    plain = nn.ModuleList([nn.Linear(4, 4)])
    assert compile_blocks(plain, device=CUDA) is True and is_compiled(plain[0])
    assert compile_module.fp8_compile_problem(fp8_blocks(), "cpu") is None  # CPU inductor is not Triton
    assert compile_module.fp8_compile_problem(fp8_blocks(), CUDA, backend="eager") is None


@pytest.mark.parametrize("sage", ["absent", "installed"])
def test_compiled_block_has_no_graph_break_from_attention_dispatch(monkeypatch, sage):
    if sage == "absent":
        monkeypatch.setitem(sys.modules, "sageattention", None)
    else:  # installed, but the CPU tensors fall back to SDPA: the decision itself must not break the graph
        fake = types.ModuleType("sageattention")
        fake.sageattn = lambda *args, **kwargs: pytest.fail("sageattn called for CPU tensors")
        monkeypatch.setitem(sys.modules, "sageattention", fake)
    attn.load_sageattn.cache_clear()
    model = build_tiny_dit(seed=0)
    block = model.blocks[0]
    gen = torch.Generator().manual_seed(0)
    x, time_mod = torch.randn(1, 24, 32, generator=gen), torch.randn(1, 6, 32, generator=gen)
    context_img, context_text = torch.randn(1, 7, 32, generator=gen), torch.randn(1, 5, 32, generator=gen)
    rope = rope_tables(16, (2, 3, 4), "cpu")
    try:
        for backend in ("sdpa", "auto", "sage"):
            torch._dynamo.reset()
            with attn.attention_backend(backend), torch.no_grad():
                expected = block(x, time_mod, context_img, context_text, rope)
                compiled = torch.compile(block.forward, fullgraph=True, backend="eager")
                got = compiled(x, time_mod, context_img, context_text, rope)  # fullgraph: any break raises
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
    finally:
        torch._dynamo.reset()
        attn.load_sageattn.cache_clear()
