"""Two onnxruntime builds in one environment (CPU over GPU) are detected and explained."""
import importlib.metadata
import logging

import pytest

from wan_animate.preprocess import onnx_session
from wan_animate.preprocess.onnx_session import build_conflict, choose_providers, installed_runtime_builds


@pytest.fixture
def both_builds(monkeypatch):
    """An environment where onnxruntime (CPU) was installed over onnxruntime-gpu."""
    real = importlib.metadata.distribution

    def distribution(name):
        if name in ("onnxruntime", "onnxruntime-gpu"):
            return real("onnxruntime")
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(onnx_session.importlib.metadata, "distribution", distribution)
    monkeypatch.setattr(onnx_session, "_warned", set())


def test_one_build_is_no_conflict():
    assert build_conflict(["onnxruntime-gpu"]) is None and build_conflict([]) is None
    assert installed_runtime_builds() == ["onnxruntime"]  # this test environment: the CPU build only


def test_conflict_names_both_builds_and_the_fix(both_builds):
    assert installed_runtime_builds() == ["onnxruntime", "onnxruntime-gpu"]
    message = build_conflict(installed_runtime_builds())
    assert "onnxruntime and onnxruntime-gpu are installed together" in message
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in message


def test_cuda_without_its_provider_explains_the_conflict(both_builds):
    with pytest.raises(RuntimeError, match="installed together"):
        choose_providers("cuda")  # the CPU build's files won: no CUDAExecutionProvider


def test_auto_warns_once_and_runs_on_the_cpu(both_builds, caplog):
    with caplog.at_level(logging.WARNING, logger="wan_animate"):
        assert choose_providers("auto") == ["CPUExecutionProvider"]
        choose_providers("auto")
    warnings = [r for r in caplog.records if "installed together" in r.getMessage()]
    assert len(warnings) == 1
