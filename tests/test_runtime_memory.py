"""Memory planner arithmetic on synthetic numbers, token counts and the activation formula."""
import pytest
import torch
from torch import nn

from wan_animate.runtime import memory
from wan_animate.runtime.memory import MemoryPlanError, plan_offload, resolve_offload_count, vram_need

GIB = 1 << 30


def test_need_adds_resident_streamed_other_activations_margin():
    sizes = [10, 10, 10, 20, 30]
    need = vram_need(sizes, offload_count=2, activation_bytes=7, other_bytes=5, prefetch=1, margin_bytes=3)
    assert need.resident_blocks == 30  # blocks 0..2 stay resident
    assert need.streamed_blocks == 2 * 30  # two of the offloaded on the device at once, sized by the largest
    assert need.total == 30 + 60 + 5 + 7 + 3
    assert vram_need(sizes, 5, 0, prefetch=3, margin_bytes=0).streamed_blocks == 4 * 30
    assert vram_need(sizes, 1, 0, prefetch=3, margin_bytes=0).streamed_blocks == 30  # never more than offloaded
    assert vram_need(sizes, 0, 0, margin_bytes=0).streamed_blocks == 0


def test_plan_picks_fewest_offloaded_blocks_that_fit():
    sizes = [GIB] * 40
    kwargs = dict(activation_bytes=4 * GIB, other_bytes=2 * GIB, prefetch=1, margin_bytes=GIB)
    # all resident: 40 + 2 + 4 + 1 = 47 GiB
    assert plan_offload(sizes, free_bytes=47 * GIB, **kwargs) == 0
    # with prefetch 1, two offloaded blocks sit on the device at once: offloading 1 or 2 saves nothing
    assert plan_offload(sizes, free_bytes=47 * GIB - 1, **kwargs) == 3
    # n offloaded: (40 - n) + min(n, 2) + 7 GiB <= 24 GiB  ->  n >= 25
    assert plan_offload(sizes, free_bytes=24 * GIB, **kwargs) == 25
    assert plan_offload(sizes, free_bytes=9 * GIB, **kwargs) == 40
    with pytest.raises(MemoryPlanError, match=r"8.00 GiB of free VRAM even with all 40 blocks offloaded.*9.00 GiB"):
        plan_offload(sizes, free_bytes=8 * GIB, **kwargs)


def test_plan_is_monotonic_in_free_memory():
    sizes = [3, 5, 4, 6, 2, 7, 5]
    counts = [plan_offload(sizes, free, activation_bytes=4, margin_bytes=1) for free in range(20, 40)]
    assert counts == sorted(counts, reverse=True)
    for free, count in zip(range(20, 40), counts):
        assert vram_need(sizes, count, 4, margin_bytes=1).total <= free


def test_resolve_offload_setting():
    sizes = [GIB] * 4
    assert resolve_offload_count(3, sizes) == 3
    # n=3: 1 resident + 2 streamed = 3 GiB
    assert resolve_offload_count("auto", sizes, free_bytes=3 * GIB, activation_bytes=0, margin_bytes=0) == 3
    with pytest.raises(ValueError, match="expected 'auto' or an integer 0..4"):
        resolve_offload_count(5, sizes)
    with pytest.raises(ValueError, match="needs free_bytes"):
        resolve_offload_count("auto", sizes)


def test_token_count_of_released_resolutions():
    # 77 frames -> 20 latent frames + 1 reference latent
    assert memory.token_count(77, 480, 832) == 21 * 30 * 52
    assert memory.token_count(77, 720, 1280) == 21 * 45 * 80
    assert memory.token_count(1, 16, 32, reference_frames=0) == 2
    with pytest.raises(ValueError, match="frames is 76; expected 4k\\+1"):
        memory.token_count(76, 480, 832)
    with pytest.raises(ValueError, match="832x481"):
        memory.token_count(77, 481, 832)


def test_activation_formula():
    tokens, dim, ffn = 1000, 64, 256
    # bf16: attention stage 64 * (4+4+2+6+12+2) = 1920 B/token > FFN stage 64*10 + 256*4 = 1664 B/token
    assert memory.estimate_activation_bytes(tokens, dim, ffn) == int(1000 * 1920 * memory.ACTIVATION_OVERHEAD)
    # a wide FFN dominates: 64*10 + 1024*4 = 4736 B/token
    assert memory.estimate_activation_bytes(tokens, dim, 1024, batch=2) == int(2 * 1000 * 4736 * 1.2)
    # float32 compute: attention 64 * (4+4+4+12+12+4) = 2560 < FFN 64*12 + 256*8 = 2816
    assert memory.estimate_activation_bytes(tokens, dim, ffn, dtype=torch.float32) == int(1000 * 2816 * 1.2)


def test_block_bytes_from_modules_and_from_sizes():
    block = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8))
    block.register_buffer("mod", torch.zeros(3, dtype=torch.float32))
    block.register_buffer("w8", torch.zeros(5, dtype=torch.float8_e4m3fn))
    assert memory.module_bytes(block) == (4 * 8 + 8 + 16) * 4 + 12 + 5
    assert memory.block_bytes(nn.ModuleList([block, block])) == [memory.module_bytes(block)] * 2
    # 14B block: about 404M parameters, ~0.75 GiB in bf16 and half of the matrices in fp8
    bf16 = memory.estimate_block_bytes(5120, 13824, weight_bytes=2)
    fp8 = memory.estimate_block_bytes(5120, 13824, weight_bytes=1)
    assert bf16 == (10 * 5120**2 + 2 * 5120 * 13824) * 2 + (18 * 5120 + 13824) * 2 + 6 * 5120 * 4
    assert bf16 - fp8 == 10 * 5120**2 + 2 * 5120 * 13824


def test_plan_for_a_built_model():
    helpers_dit = pytest.importorskip("helpers_dit")
    model = helpers_dit.build_tiny_dit()
    sizes = memory.block_bytes(model.blocks)
    other = memory.module_bytes(model) - sum(sizes)
    tokens = 3 * 2 * 3
    activations = memory.estimate_activation_bytes(tokens, 32, 48, torch.float32)
    # room for 5 of the 6 (equal) blocks: offloading 1 or 2 saves nothing (2 streamed at once), 3 resident + 2 fits
    assert len(set(sizes)) == 1
    free = other + activations + 5 * sizes[0]
    assert memory.plan_offload_for_model(model, free, tokens, torch.float32, margin_bytes=0) == 3
    assert memory.plan_offload_for_model(model, free + sizes[0], tokens, torch.float32, margin_bytes=0) == 0


def test_fp8_matmul_activations_count_the_quantised_input_copies():
    from wan_animate.runtime.fp8 import FP8Linear, set_fp8_matmul
    tokens, dim, ffn = 1000, 64, 256
    # bf16: attention stage 64 * (30 + 5) = 2240 B/token < FFN stage 64*10 + 256 * (2 + 5) = 2432 B/token
    assert memory.fp8_matmul_activation_bytes(tokens, dim, ffn) == int(1000 * 2432 * memory.ACTIVATION_OVERHEAD)
    plain = memory.estimate_activation_bytes(tokens, dim, ffn)
    model = nn.Sequential(FP8Linear(dim, ffn), nn.GELU(), FP8Linear(ffn, dim))
    assert memory.fp8_matmul_workspace_bytes(model, tokens, dim, ffn) == 0  # fp8 storage only: upcast, no copies
    set_fp8_matmul(model, True)
    assert memory.fp8_matmul_workspace_bytes(model, tokens, dim, ffn) == int(1000 * 2432 * 1.2) - plain
    # float32 input never takes the _scaled_mm path
    assert memory.fp8_matmul_workspace_bytes(model, tokens, dim, ffn, torch.float32) == 0
    # 14B at 832x480x77 (32,760 tokens): 6.56 GiB against 5.62 GiB. The GPU measured 8.63 GiB of activations with
    # the earlier quantisation's three float32 copies (12 B per input value; 13.70 GiB peak with 32 of 40 blocks
    # offloaded), 4.55 GiB with fp8 storage (9.62 GiB); the quotient and e4m3 copy take 5 B, 2.95 GiB less at the FFN
    tokens = memory.token_count(77, 480, 832)
    assert round(memory.estimate_activation_bytes(tokens, 5120, 13824) / GIB, 2) == 5.62
    assert round(memory.fp8_matmul_activation_bytes(tokens, 5120, 13824) / GIB, 2) == 6.56
