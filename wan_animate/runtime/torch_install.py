"""Signs that torch was changed under the running program, the usual damage of a `pip install sam2` that was let
resolve torch: a new torch on disk while the old one is loaded, or a torchvision built for another torch."""
from __future__ import annotations

import importlib.metadata
import re

SAFE_SAM2_INSTALL = ("pip install --no-deps --no-build-isolation sam2 && pip install 'hydra-core>=1.3.2' "
                     "'iopath>=0.1.10' 'tqdm>=4.66.1'")


def _release(version: str) -> str:
    """'2.13.0+cu130' -> '2.13.0' (the local build tag is not part of a release pin)."""
    return version.split("+")[0]


def torch_install_problems(loaded_version: str | None = None) -> list[str]:
    """What is wrong with the torch / torchvision pair on disk compared with the torch this process loaded."""
    if loaded_version is None:
        import torch

        loaded_version = torch.__version__
    loaded = loaded_version
    problems = []
    try:
        on_disk = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        on_disk = None
    if on_disk is not None and on_disk != loaded:
        problems.append(f"torch {on_disk} is installed but this process runs torch {loaded}: torch was replaced "
                        f"after the start (restart ComfyUI; to get the old one back: pip install torch=={loaded} "
                        "from the index it came from)")
    try:
        requirements = importlib.metadata.requires("torchvision") or []
    except importlib.metadata.PackageNotFoundError:
        requirements = []
    for requirement in requirements:
        pin = re.fullmatch(r"torch\s*==\s*([\w.+]+)\s*", requirement.split(";")[0])
        if pin and _release(pin.group(1)) != _release(on_disk or loaded):
            problems.append(f"torchvision {importlib.metadata.version('torchvision')} is built for torch "
                            f"{pin.group(1)}, but torch {on_disk or loaded} is installed: install the torchvision "
                            "release that matches your torch")
    return problems
