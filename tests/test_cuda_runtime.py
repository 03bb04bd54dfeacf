"""CUDA layer of the runtime (`python3 -m pytest -m cuda -s tests/`; skipped without a GPU).

A moderately sized random DiT (dim 1024, 8 blocks, ~0.3 GB in bf16) checks on a real device: offloaded forwards equal
resident ones bit for bit (also under the cudaMallocAsync allocator), a forced OOM while placing returns device
memory to its baseline, offloaded blocks are pinned in place and unpinned / freed on remove and release, a compiled
model equals eager without recompiling, and SageAttention's per-call error against SDPA. `-s` shows the measured
figures (lines starting with "CUDA figure").
"""
import dataclasses
import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers_dit import build_tiny_dit, tiny_config, tiny_inputs
from wan_animate.loading.model_handle import DiTHandle, DiTOptions
from wan_animate.runtime.attention import attention, load_sageattn
from wan_animate.runtime.memory import module_bytes
from wan_animate.runtime.oom import VramExhaustedError

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG = dict(dim=1024, ffn_dim=4096, num_heads=8, num_layers=8)
TOKENS = 5 * 8 * 12


def figure(name: str, value) -> None:
    print(f"\nCUDA figure: {name} = {value}")


@pytest.fixture(scope="module")
def dit_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cuda_dit") / "dit.safetensors"
    model = build_tiny_dit(seed=5, config=tiny_config(**CONFIG))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def cuda_inputs(dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    inputs = tiny_inputs(tiny_config(**CONFIG), frames=5, height=16, width=24)
    return {k: v.cuda() if k == "t" else v.to("cuda", dtype) for k, v in inputs.items()}


def forward(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        motion = model.encode_face(inputs["face_pixels"])
        out = model(inputs["x"], inputs["t"], inputs["context"], inputs["clip_fea"], inputs["y"],
                    inputs["pose_latents"], motion)
    return out.float().cpu()


def with_options(handle: DiTHandle, **changes) -> DiTHandle:
    """The same loaded model under other options."""
    return dataclasses.replace(handle, options=dataclasses.replace(handle.options, **changes))


def host_tensors(model) -> list[torch.Tensor]:
    return list(model.parameters()) + list(model.buffers())


def test_offloaded_forward_is_bitwise_equal_to_resident(dit_file):
    if os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "").startswith("backend:cudaMallocAsync"):
        assert torch.cuda.get_allocator_backend() == "cudaMallocAsync"
    handle = DiTHandle(dit_file, DiTOptions(dtype=torch.bfloat16, offload=0))
    inputs = cuda_inputs()
    with handle.activate("cuda", TOKENS) as model:
        resident = forward(model, inputs)
    for offload, prefetch in ((4, 1), (8, 2)):
        with with_options(handle, offload=offload, prefetch=prefetch).activate("cuda", TOKENS) as model:
            assert torch.equal(forward(model, inputs), resident), f"offload {offload}, prefetch {prefetch}"
            assert torch.equal(forward(model, inputs), resident), "second forward"


def test_offloaded_forward_is_bitwise_equal_under_cuda_malloc_async():
    env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF="backend:cudaMallocAsync")
    test = f"{Path(__file__).relative_to(REPO_ROOT)}::test_offloaded_forward_is_bitwise_equal_to_resident"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.parametrize("offload", [0, 4])
def test_oom_while_placing_returns_device_memory_to_baseline(dit_file, offload):
    handle = DiTHandle(dit_file, DiTOptions(dtype=torch.bfloat16, offload=offload))
    inputs = cuda_inputs()
    with handle.activate("cuda", TOKENS) as model:
        expected = forward(model, inputs)
    model = handle.model()
    gc.collect()
    torch.cuda.empty_cache()
    baseline, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    total = torch.cuda.get_device_properties(0).total_memory
    # room for a quarter of the weights: the move to the device runs out of memory part way
    torch.cuda.set_per_process_memory_fraction((reserved + module_bytes(model) // 4) / total)
    try:
        with pytest.raises(VramExhaustedError) as info:
            with handle.activate("cuda", TOKENS):
                pytest.fail("the body must not run when placing failed")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert "placing the model on the GPU" in str(info.value) and f"offload_blocks is {offload}" in str(info.value)
    figure(f"memory allocated after a failed placement (offload {offload}) minus baseline, bytes",
           torch.cuda.memory_allocated() - baseline)
    assert torch.cuda.memory_allocated() == baseline
    assert torch.cuda.memory_reserved() <= reserved
    assert all(t.device.type == "cpu" and not t.is_pinned() for t in host_tensors(model))
    assert all(not b._forward_pre_hooks for b in model.blocks)
    with handle.activate("cuda", TOKENS) as model:  # the next run works
        assert torch.equal(forward(model, inputs), expected)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def host_allocator_bytes() -> int:
    """Bytes held by PyTorch's pinned host caching allocator (0 when this PyTorch has no statistics for it)."""
    stats = getattr(torch.cuda, "host_memory_stats", lambda: {})()
    return int(stats.get("allocated_bytes.current", 0))


def test_pinned_host_memory_across_offload_remove_release(dit_file):
    handle = DiTHandle(dit_file, DiTOptions(dtype=torch.bfloat16, offload=6))
    model = handle.model()
    offloaded = [t for block in model.blocks[2:] for t in list(block.parameters()) + list(block.buffers())]
    offloaded_bytes = sum(t.nbytes for t in offloaded)
    gc.collect()
    rss_loaded, cached_before = rss_bytes(), host_allocator_bytes()
    with handle.activate("cuda", TOKENS) as placed:
        offloaded = [t for block in placed.blocks[2:] for t in list(block.parameters()) + list(block.buffers())]
        assert all(t.device.type == "cpu" and t.is_pinned() for t in offloaded)
        forward(placed, cuda_inputs())
        rss_placed = rss_bytes()
        figure("host RSS growth while 6 of 8 blocks are offloaded, MiB", (rss_placed - rss_loaded) >> 20)
        figure("offloaded bytes, MiB", offloaded_bytes >> 20)
        assert host_allocator_bytes() == cached_before  # nothing from PyTorch's power-of-two pinned cache
    assert all(not t.is_pinned() for t in offloaded)  # unpinned by remove(), still the model's weights
    del placed, offloaded, model
    handle.release()
    gc.collect()
    rss_released = rss_bytes()
    figure("host RSS drop after release, MiB", (rss_loaded - rss_released) >> 20)
    assert rss_loaded - rss_released > offloaded_bytes // 2  # the memory went back


def test_compiled_model_equals_eager_without_recompiling(dit_file):
    dynamo = pytest.importorskip("torch._dynamo")
    from torch._dynamo.utils import counters

    handle = DiTHandle(dit_file, DiTOptions(dtype=torch.float32, offload=0))
    inputs = cuda_inputs(torch.float32)
    with handle.activate("cuda", TOKENS) as model:
        eager = forward(model, inputs)
    dynamo.reset()
    counters.clear()
    compiled = with_options(handle, compile=True)
    with compiled.activate("cuda", TOKENS) as model:
        first = forward(model, inputs)
        graphs = counters["stats"]["unique_graphs"]
        second = forward(model, inputs)
        assert counters["stats"]["unique_graphs"] == graphs, "the second forward recompiled"
    error = (first - eager).abs().max().item() / max(1.0, eager.abs().max().item())
    figure("compiled vs eager, float32, max error relative to max(1, |eager|)", f"{error:.2e}")
    figure("compiled graphs for 8 blocks (unique_graphs)", graphs)
    figure("dynamo recompilations", sum(counters["recompiles"].values()) if "recompiles" in counters else 0)
    assert error <= 1e-4
    assert torch.equal(first, second)
    assert 1 <= graphs <= CONFIG["num_layers"]  # at most one graph per block (they share one code object)


@pytest.mark.skipif(load_sageattn() is None, reason="sageattention is not installed")
@pytest.mark.parametrize("q_len, k_len", [(4096, 4096), (4096, 512)])
def test_sage_attention_error_against_sdpa(q_len, k_len):
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, q_len, 8, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    k = torch.randn(1, k_len, 8, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    v = torch.randn(1, k_len, 8, 128, device="cuda", dtype=torch.bfloat16, generator=gen)
    reference = attention(q, k, v, backend="sdpa").float()
    sage = attention(q, k, v, backend="sage").float()
    error = (sage - reference).abs().max().item() / reference.abs().max().item()
    mean_error = (sage - reference).abs().mean().item() / reference.abs().mean().item()
    figure(f"sage vs sdpa, q {q_len} k {k_len}: max / mean error relative", f"{error:.2e} / {mean_error:.2e}")
    assert error < 0.1 and mean_error < 0.02
