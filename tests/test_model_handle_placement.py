"""DiTHandle placement: failures while placing are undone, and the offload plan reserves the VAE's workspace.

The GPU path runs on CPU here: `free_memory_bytes` is faked and the offloader places on the CPU with a mocked
pinner, so what is checked is the bookkeeping (hooks, pins, moves back, the message); tests/test_cuda_runtime.py
checks the device memory itself.
"""
import pytest
import torch
from safetensors.torch import save_file

from helpers_dit import build_tiny_dit, run_dit, tiny_inputs
from test_runtime_pinned import FakePinner
from wan_animate.loading import model_handle
from wan_animate.loading.model_handle import DiTHandle, DiTOptions
from wan_animate.runtime import offload
from wan_animate.runtime.memory import (block_bytes, estimate_activation_bytes, fp8_matmul_activation_bytes,
                                        fp8_matmul_workspace_bytes, module_bytes, vram_need)
from wan_animate.runtime.oom import VramExhaustedError

GIB = 1 << 30


@pytest.fixture(scope="module")
def dit_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("placement") / "dit.safetensors"
    model = build_tiny_dit(seed=3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path), run_dit(model, tiny_inputs())


@pytest.fixture
def gpu_on_cpu(monkeypatch):
    """Make the "cuda" placement path run on the CPU; returns the pinner and a log of model.to targets."""
    pinner = FakePinner()
    real = offload.enable_block_offload
    placed = []

    def enable_on_cpu(model, device, count, prefetch=1, pinning=None):
        placed.append(count)
        return real(model, "cpu", count, prefetch, pinning=pinning, pinner=pinner)

    monkeypatch.setattr(model_handle, "enable_block_offload", enable_on_cpu)
    monkeypatch.setattr(model_handle, "free_memory_bytes", lambda device: 80 * GIB)
    return pinner, placed


def moves_of(monkeypatch, model):
    """Record the devices `model.to(...)` is called with (the move itself is skipped for "cuda")."""
    moves = []
    real = model.to

    def to(device, *args, **kwargs):
        moves.append(str(device))
        return model if str(device).startswith("cuda") else real(device, *args, **kwargs)

    monkeypatch.setattr(model, "to", to)
    return moves


def assert_clean(model, pinner):
    assert all(not block._forward_pre_hooks and not block._forward_hooks for block in model.blocks)
    assert pinner.registered == {}
    assert all(t.device.type == "cpu" for t in list(model.parameters()) + list(model.buffers()))


def test_oom_while_placing_is_undone_and_explained(dit_file, gpu_on_cpu, monkeypatch):
    path, expected = dit_file
    pinner, _ = gpu_on_cpu
    handle = DiTHandle(path, DiTOptions(dtype=torch.float32, offload=2, compile=True))
    model = handle.model()
    moves = moves_of(monkeypatch, model)

    def compile_fails(blocks, device=None):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(model_handle, "compile_blocks", compile_fails)  # fails after the offloader is in place
    with pytest.raises(VramExhaustedError) as info:
        with handle.activate("cuda", tokens=64):
            pytest.fail("the body must not run when placing failed")
    message = str(info.value)
    assert message.startswith("Out of GPU memory during placing the model on the GPU (tried to allocate 20.00 MiB)")
    assert "offload_blocks is 2" in message and "fp8" in message
    assert moves[-1] == "cpu"
    assert_clean(model, pinner)

    # the next run works and computes what the file holds
    monkeypatch.undo()
    handle = DiTHandle(path, DiTOptions(dtype=torch.float32, offload=2), _shared=handle._shared)
    monkeypatch.setattr(model_handle, "free_memory_bytes", lambda device: 80 * GIB)
    with handle.activate("cpu", tokens=64) as model:
        assert torch.equal(run_dit(model, tiny_inputs()), expected)


def test_oom_moving_a_resident_block_moves_everything_back(dit_file, gpu_on_cpu, monkeypatch):
    path, _ = dit_file
    pinner, _ = gpu_on_cpu
    handle = DiTHandle(path, DiTOptions(dtype=torch.float32, offload=3))
    model = handle.model()
    moves = moves_of(monkeypatch, model)

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model.blocks[2], "to", oom)
    with pytest.raises(VramExhaustedError, match="offload more transformer blocks"):
        with handle.activate("cuda", tokens=64):
            pass
    assert moves == ["cpu"]
    assert_clean(model, pinner)


def test_host_memory_running_out_while_packing_says_what_to_change(dit_file, gpu_on_cpu, monkeypatch):
    path, _ = dit_file
    pinner, _ = gpu_on_cpu
    handle = DiTHandle(path, DiTOptions(dtype=torch.float32, offload=3))
    model = handle.model()
    real = offload.PackedBlock
    made = []

    def packed_block(module):
        if len(made) == 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1073741824 bytes")
        made.append(real(module))
        return made[-1]

    monkeypatch.setattr(offload, "PackedBlock", packed_block)
    with pytest.raises(RuntimeError, match=r"Out of host memory while preparing 3 offloaded transformer blocks.*"
                                           r"Offload fewer blocks \(offload_blocks\)"):
        with handle.activate("cuda", tokens=64):
            pass
    assert len(pinner.calls) == 2
    assert_clean(model, pinner)


def test_auto_plan_reserves_the_larger_of_activations_and_workspace(dit_file, gpu_on_cpu, monkeypatch):
    path, _ = dit_file
    _, placed = gpu_on_cpu
    handle = DiTHandle(path, DiTOptions(dtype=torch.float32, offload="auto"))
    model = handle.model()
    moves_of(monkeypatch, model)
    sizes = block_bytes(model.blocks)
    other = module_bytes(model) - sum(sizes)
    activations = estimate_activation_bytes(64, model.config.dim, model.config.ffn_dim, torch.float32)
    workspace = activations + 3 * sizes[-1]  # a VAE needing three blocks' worth more than the DiT's activations
    free = vram_need(sizes, 0, activations, other).total  # everything resident fits with the activations only
    monkeypatch.setattr(model_handle, "free_memory_bytes", lambda device: free)

    assert handle.fits("cuda", 64) and not handle.fits("cuda", 64, workspace_bytes=free)
    with handle.activate("cuda", tokens=64):
        pass
    assert placed == []  # all resident
    assert handle.fits("cuda", 64, workspace_bytes=workspace)
    with handle.activate("cuda", tokens=64, workspace_bytes=workspace):
        pass
    # resident blocks must give up 3 blocks' bytes; with prefetch 1 two streamed blocks sit on the device: 5 offloaded
    assert placed == [5]
    assert vram_need(sizes, 5, workspace, other).total <= free < vram_need(sizes, 4, workspace, other).total


def test_auto_plan_reserves_the_fp8_matmul_input_copies(dit_file, gpu_on_cpu, monkeypatch):
    path, _ = dit_file
    _, placed = gpu_on_cpu
    tokens = 64
    counts = {}
    for fp8_matmul, capable in ((False, True), (True, False), (True, True)):
        monkeypatch.setattr(model_handle, "device_has_fp8_matmul", lambda device, capable=capable: capable)
        handle = DiTHandle(path, DiTOptions(dtype=torch.bfloat16, storage="fp8_e4m3fn", offload="auto",
                                            fp8_matmul=fp8_matmul))
        model = handle.model()
        moves_of(monkeypatch, model)
        sizes = block_bytes(model.blocks)
        other = module_bytes(model) - sum(sizes)
        activations = estimate_activation_bytes(tokens, model.config.dim, model.config.ffn_dim)
        free = vram_need(sizes, 0, activations, other).total  # fits all resident without the fp8-matmul copies
        monkeypatch.setattr(model_handle, "free_memory_bytes", lambda device, free=free: free)
        with handle.activate("cuda", tokens=tokens):
            pass
        counts[fp8_matmul, capable] = placed.pop() if placed else 0
    dim, ffn = model.config.dim, model.config.ffn_dim
    workspace = fp8_matmul_activation_bytes(tokens, dim, ffn) - activations
    assert workspace > 0 and fp8_matmul_workspace_bytes(model, tokens, dim, ffn) == workspace
    assert counts[False, True] == 0 and counts[True, False] == 0  # off, or a GPU without fp8 tensor cores: as before
    assert counts[True, True] > 0
    count = counts[True, True]
    need = [vram_need(sizes, n, activations + workspace, other).total for n in (count - 1, count)]
    assert need[1] <= free < need[0]
