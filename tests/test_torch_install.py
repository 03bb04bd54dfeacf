"""A torch replaced under the running process (the damage of a careless `pip install sam2`) is named, and SAM2
refuses to run on it."""
import importlib.metadata

import numpy as np
import pytest
import torch

from wan_animate.preprocess import masks
from wan_animate.runtime import torch_install
from wan_animate.runtime.torch_install import torch_install_problems


def fake_metadata(monkeypatch, torch_on_disk: str, torchvision_pin: str | None):
    def version(name):
        if name == "torch":
            return torch_on_disk
        if name == "torchvision" and torchvision_pin:
            return "0.99.0"
        raise importlib.metadata.PackageNotFoundError(name)

    def requires(name):
        if name == "torchvision" and torchvision_pin:
            return ["numpy", f"torch=={torchvision_pin}", "pillow!=8.3.*,>=5.3.0"]
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(torch_install.importlib.metadata, "version", version)
    monkeypatch.setattr(torch_install.importlib.metadata, "requires", requires)


def test_a_consistent_install_has_no_problem(monkeypatch):
    fake_metadata(monkeypatch, "2.13.0+cu130", "2.13.0")
    assert torch_install_problems("2.13.0+cu130") == []
    assert torch_install_problems() == [] or torch.__version__ != importlib.metadata.version("torch")


def test_torch_replaced_after_the_start_is_named(monkeypatch):
    fake_metadata(monkeypatch, "2.14.1", "2.14.1")
    problems = torch_install_problems("2.13.0+cu130")
    assert len(problems) == 1
    assert "torch 2.14.1 is installed but this process runs torch 2.13.0+cu130" in problems[0]
    assert "restart ComfyUI" in problems[0]


def test_torchvision_for_another_torch_is_named(monkeypatch):
    fake_metadata(monkeypatch, "2.13.0+cpu", "2.14.1")
    problems = torch_install_problems("2.13.0+cpu")
    assert problems == ["torchvision 0.99.0 is built for torch 2.14.1, but torch 2.13.0+cpu is installed: install "
                        "the torchvision release that matches your torch"]


def test_sam2_masks_refuse_a_changed_torch(monkeypatch):
    fake_metadata(monkeypatch, "0.0.1", None)  # whatever runs here, the torch on disk is another one
    with pytest.raises(RuntimeError, match="SAM2 masks cannot run: torch 0.0.1 is installed"):
        masks.sam2_person_masks(np.zeros((1, 32, 32, 3), np.uint8), np.zeros((1, 133, 3), np.float32), "x.pt")
