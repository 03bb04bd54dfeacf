"""fp8 matrix multiplication: per-tensor e4m3 activation quantisation, the emulated maths, the tiny DiT's accuracy
against bf16, the fallback where fp8 tensor cores are missing, and (on CUDA) torch._scaled_mm against the emulation."""
from __future__ import annotations

import pytest
import torch

from tests.benchmark_scripts import load_benchmark
from tests.helpers_dit import build_tiny_dit, run_dit, tiny_inputs
from wan_animate.loading.dit import FP8_STORAGE_PREFIXES
from wan_animate.runtime import fp8
from wan_animate.runtime.fp8 import FP8Linear, quantize, set_fp8_matmul, swap_linears_to_fp8


def _fp8_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose block and face-adapter Linears hold per-tensor e4m3 weights (as the loader stores)."""
    state = model.state_dict()
    copy = build_tiny_dit(seed=0)
    swap_linears_to_fp8(copy, lambda name: name.startswith(FP8_STORAGE_PREFIXES))
    for name, module in copy.named_modules():
        if isinstance(module, FP8Linear):
            data, scale = quantize(state[f"{name}.weight"])
            module.weight = torch.nn.Parameter(data, requires_grad=False)
            module.scale_weight = scale
            module.bias = torch.nn.Parameter(state[f"{name}.bias"].clone(), requires_grad=False)
    return copy


def test_activation_quantisation_is_per_tensor_amax_e4m3():
    x = torch.tensor([[0.5, -3.0], [1.0, 0.25]], dtype=torch.bfloat16)
    x_q, scale = fp8.quantize_activation(x)
    assert x_q.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
    assert scale.item() == pytest.approx(3.0 / 448)
    assert x_q.float().abs().max().item() == 448.0  # the amax element maps to the e4m3 maximum
    torch.testing.assert_close(x_q.float() * scale, x.float(), rtol=2 ** -3, atol=0)  # 3 mantissa bits


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_activation_quantisation_equals_the_clamped_float32_formula(dtype):
    """The three-pass quantisation gives the bits of the float32 reference: x.float() / (amax / 448), clamped."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(64, 96, generator=g) * torch.logspace(-3, 2, 96)).to(dtype)
    x[0, :3] = torch.tensor([0.0, -0.0, x.float().abs().max().item()]).to(dtype)  # signed zeros, a tied amax
    xf = x.float()
    scale = xf.abs().amax().clamp(min=1e-12) / 448
    reference = (xf / scale).clamp(-448, 448).to(torch.float8_e4m3fn)
    x_q, got_scale = fp8.quantize_activation(x)
    assert got_scale.shape == () and torch.equal(got_scale, scale)
    assert torch.equal(x_q.view(torch.uint8), reference.view(torch.uint8))
    zeros, _ = fp8.quantize_activation(torch.zeros(4, 16, dtype=dtype))
    assert torch.equal(zeros.float(), torch.zeros(4, 16))


def test_activation_quantisation_reads_a_bf16_input_in_three_passes():
    """The quantisation moves 13 bytes per bf16 input value (was 39: copy, abs, amax, divide, clamp, cast)."""
    step_traffic = load_benchmark("step_traffic")
    x = torch.empty(4096, 1024, dtype=torch.bfloat16, device="meta")
    counter = step_traffic.TrafficCounter()
    with counter:
        fp8.quantize_activation(x)
    assert sum(counter.other.values()) <= 13 * x.numel() + 64, counter.other


def test_emulated_linear_is_quantised_input_times_dequantised_weight():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 32, generator=g).to(torch.bfloat16)
    weight, w_scale = quantize(torch.randn(48, 32, generator=g) * 0.1)
    bias = torch.randn(48, generator=g)
    x_q, x_scale = fp8.quantize_activation(x)
    expected = (x_q.double() * x_scale.double()) @ (weight.double() * w_scale.double()).t() + bias.double()
    out = fp8.emulated_fp8_linear(x, weight, w_scale, bias)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected.to(torch.bfloat16).double(), rtol=1e-2, atol=1e-3)


def test_tiny_dit_with_fp8_matmul_stays_close_to_bf16(monkeypatch):
    """The emulated fp8 maths through the whole tiny DiT (bf16 compute) against the bf16 model."""
    reference = build_tiny_dit(seed=0).to(torch.bfloat16)
    quantised = _fp8_copy(build_tiny_dit(seed=0)).to(torch.bfloat16)
    inputs = tiny_inputs()
    storage_only = run_dit(quantised, inputs)
    assert set_fp8_matmul(quantised, True) == sum(isinstance(m, FP8Linear) for m in quantised.modules()) > 10
    calls = []
    monkeypatch.setattr(fp8, "fp8_matmul_usable", lambda x, w: True)
    monkeypatch.setattr(fp8, "scaled_mm_linear", lambda *a: calls.append(1) or fp8.emulated_fp8_linear(*a))
    matmul = run_dit(quantised, inputs)
    bf16 = run_dit(reference, inputs)
    assert calls and not torch.equal(matmul, storage_only)
    scale = bf16.abs().mean()
    assert (storage_only - bf16).abs().mean() / scale < 0.05
    assert (matmul - bf16).abs().mean() / scale < 0.08


def test_fp8_matmul_falls_back_to_the_upcast_without_fp8_tensor_cores():
    layer = FP8Linear(32, 16)
    data, scale = quantize(torch.randn(16, 32) * 0.1)
    layer.weight = torch.nn.Parameter(data, requires_grad=False)
    layer.scale_weight = scale
    x = torch.randn(3, 32).to(torch.bfloat16)
    upcast = layer(x)
    layer.fp8_matmul = True
    assert not fp8.fp8_matmul_usable(x, layer.weight)  # CPU
    assert torch.equal(layer(x), upcast)
    assert not fp8.device_has_fp8_matmul(torch.device("cpu"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_scaled_mm_matches_the_emulation_on_cuda():
    device = torch.device("cuda")
    if not fp8.device_has_fp8_matmul(device):
        pytest.skip("this GPU has no fp8 tensor cores (compute capability < 8.9)")
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(2, 300, 512, generator=g, device=device).to(torch.bfloat16)
    weight, w_scale = quantize(torch.randn(1024, 512, generator=g, device=device) * 0.02)
    bias = torch.randn(1024, generator=g, device=device).to(torch.bfloat16)
    assert fp8.fp8_matmul_usable(x, weight)
    kernel = fp8.scaled_mm_linear(x, weight, w_scale, bias)
    emulated = fp8.emulated_fp8_linear(x, weight, w_scale, bias)
    assert kernel.shape == (2, 300, 1024) and kernel.dtype == torch.bfloat16
    torch.testing.assert_close(kernel.float(), emulated.float(), rtol=1e-2, atol=1e-2)
