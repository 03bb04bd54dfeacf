"""OOM wrapper: an injected out-of-memory error becomes an actionable message after memory is freed; device helpers."""
import pytest
import torch

from wan_animate.runtime import devices, oom
from wan_animate.runtime.oom import VramExhaustedError, explain_oom

OOM_TEXT = "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 79.11 GiB"


def test_injected_oom_becomes_actionable_error_after_freeing(monkeypatch):
    monkeypatch.setattr(oom, "memory_report", lambda device: {"total": 79.11, "peak allocated": 77.5})
    freed = []
    settings = {"offload_blocks": 10, "fp8": False, "resolution": "1280x720", "frames": 77}
    with pytest.raises(VramExhaustedError) as info:
        with explain_oom("denoising", settings, free=lambda: freed.append(True)):
            raise torch.cuda.OutOfMemoryError(OOM_TEXT)
    message = str(info.value)
    assert freed == [True]
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)
    assert "during denoising (tried to allocate 2.50 GiB)" in message
    assert "total 79.11 GiB" in message and "peak allocated 77.50 GiB" in message
    assert "offload_blocks=10" in message and "resolution=1280x720" in message
    lines = message.splitlines()
    hints = lines[lines.index("To fit, change one of these:") + 1:]
    assert hints[0].startswith("  - offload more transformer blocks (offload_blocks is 10")
    assert any("fp8" in h for h in hints) and any("lower the resolution" in h for h in hints)
    assert any("segment length" in h for h in hints) and any("tiled VAE" in h for h in hints)


def test_vae_stage_suggests_tiling_first_and_reports_missing_stats(monkeypatch):
    monkeypatch.setattr(oom, "memory_report", lambda device: {})

    @explain_oom("vae decode", free=lambda: None)
    def decode():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    with pytest.raises(VramExhaustedError) as info:
        decode()
    lines = str(info.value).splitlines()
    assert lines[0] == "Out of GPU memory during vae decode."
    assert "no CUDA memory statistics" in lines[1]
    assert "tiled VAE" in lines[lines.index("To fit, change one of these:") + 1]


def test_other_errors_pass_through_untouched():
    freed = []
    with pytest.raises(ValueError, match="bad input"):
        with explain_oom("denoising", free=lambda: freed.append(True)):
            raise ValueError("bad input")
    assert freed == []


def test_default_free_routine_runs_on_cpu():
    with pytest.raises(VramExhaustedError):
        with explain_oom("denoising"):
            raise torch.cuda.OutOfMemoryError(OOM_TEXT)


def test_device_helpers_on_cpu():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.compute_dtype("cpu") == torch.float32
    assert devices.supports_fp8_matmul("cpu") is False
    assert devices.pinned_memory_available() is torch.cuda.is_available()
    with pytest.raises(ValueError, match="cpu is not a CUDA device"):
        devices.free_memory_bytes("cpu")
