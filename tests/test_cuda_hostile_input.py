"""CUDA layer for real files on real GPUs (`python3 -m pytest -m cuda -s tests/`; skipped without a GPU): a DiT whose
every Linear / convolution (face encoder, motion encoder and face adapter included) is scaled fp8 runs the face path
in bf16 on the device, and an onnxruntime CUDA session gives its device memory back when released. `-s` shows the
measured figures (lines starting with "CUDA figure")."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from helpers_dit import build_tiny_dit, tiny_config, tiny_inputs
from onnx_fixtures import _export
from wan_animate.loading.dit import load_dit
from wan_animate.runtime.fp8 import FP8Linear, dequantize, quantize

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
MIB = 1024 ** 2


def figure(name: str, value) -> None:
    print(f"\nCUDA figure: {name} = {value}")


def test_every_layer_in_scaled_fp8_runs_the_face_path_on_the_gpu(tmp_path):
    model = build_tiny_dit(seed=0)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    reference_state = dict(state)
    names = [f"{n}.weight" for n, m in model.named_modules()
             if isinstance(getattr(m, "weight", None), torch.nn.Parameter) and m.weight.ndim >= 2
             and not n.endswith("direction")]
    for key in names:
        w8, scale = quantize(state[key])
        state[key], reference_state[key] = w8, dequantize(w8, scale, torch.float32)
        state[f"{key[: -len('.weight')]}.scale_weight"] = scale.reshape(1)
    state["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    path = tmp_path / "all_fp8.safetensors"
    save_file(state, str(path))
    loaded = load_dit(str(path), device="cuda", dtype=torch.bfloat16)
    assert isinstance(loaded.face_encoder.out_proj, FP8Linear)
    reference = build_tiny_dit(seed=0)
    reference.load_state_dict({k: v.float() for k, v in reference_state.items()})
    reference = reference.to("cuda", torch.bfloat16)
    inputs = tiny_inputs(tiny_config(), frames=3)
    outputs = []
    for dit in (loaded, reference):
        with torch.no_grad():
            motion = dit.encode_face(inputs["face_pixels"].cuda())
            assert motion.dtype == torch.bfloat16
            outputs.append(dit(*(inputs[k].cuda() for k in ("x", "t", "context", "clip_fea", "y", "pose_latents")),
                               motion).float().cpu())
    error = (outputs[0] - outputs[1]).abs().max().item()
    figure("all-fp8 tiny DiT vs its dequantised bf16 twin, max abs error", f"{error:.3e}")
    assert torch.isfinite(outputs[0]).all() and error <= 0.05 * outputs[1].abs().max().item()


class _WideConv(torch.nn.Module):
    """Large activations (64 channels at the input size) so that the session's arena is measurable."""

    def __init__(self):
        super().__init__()
        self.expand = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.reduce = torch.nn.Conv2d(64, 17, 3, padding=1)

    def forward(self, x):
        return self.reduce(torch.relu(self.expand(x)))


def test_released_onnx_cuda_session_gives_device_memory_back(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without CUDAExecutionProvider (pip install onnxruntime-gpu)")
    from wan_animate.preprocess.onnx_session import OnnxModel

    path = _export(_WideConv(), torch.zeros(2, 3, 512, 512), tmp_path / "wide.onnx", "input", "output", True)
    batch = np.random.default_rng(0).random((8, 3, 512, 512), dtype=np.float32)

    def free() -> int:
        gc.collect()
        torch.cuda.synchronize()
        return torch.cuda.mem_get_info()[0]

    warm = OnnxModel(path, device="cuda", max_batch=8)  # loads the CUDA libraries once: not the session's memory
    assert warm.providers[0] == "CUDAExecutionProvider"
    warm.run(batch)
    warm.release()
    baseline = free()
    model = OnnxModel(path, device="cuda", max_batch=8)
    expected = model.run(batch)
    during = free()
    model.release()
    after = free()
    taken, kept = (baseline - during) / MIB, (baseline - after) / MIB
    figure("onnxruntime CUDA session (8x64x512x512 activations): MiB held while open / after release",
           f"{taken:.0f} / {kept:.0f}")
    assert taken > 256 and kept < 32
    assert np.array_equal(model.run(batch), expected)  # reopened on the next run
