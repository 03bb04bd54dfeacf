"""Shared fixtures: the pack loaded as ComfyUI loads it, and the golden parity folder."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_MODULE = "wan_animate_pack"


class _RepositoryRootIsNoPackage:
    """Collect the repository root as a plain folder, not as a Python package.

    pytest 8+ imports the `__init__.py` of every package above a test file. Ours is ComfyUI's entry point and
    needs a package name; a checkout folder such as `comfyui-wan-animate` is no valid one, so that import fails
    (and in a folder with a valid name it would import the pack under that folder's name). The tests load the
    pack the way ComfyUI does (`load_pack`) instead.
    """

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: Path, parent):
        if path == REPO_ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config) -> None:
    # Registered as a plugin, not as a conftest hook: conftest hooks only see paths below tests/.
    config.pluginmanager.register(_RepositoryRootIsNoPackage(), "wan-animate-repository-root")


def golden_root() -> Path:
    """`$WAN_ANIMATE_GOLDEN`, else `../shared/golden` beside the repository."""
    return Path(os.environ.get("WAN_ANIMATE_GOLDEN", REPO_ROOT.parent / "shared" / "golden"))


def golden_section(name: str) -> Path:
    """A section of the golden set (`dit`, `vae`, ...), skipping the test when it is absent."""
    path = golden_root() / name
    if not path.is_dir():
        pytest.skip(f"golden set {path} is absent (set WAN_ANIMATE_GOLDEN)")
    return path


def absent_golden_param(path: Path, arguments: int = 1) -> list:
    """The parameter list of a test parametrized over a golden folder's contents when that folder is absent: one
    skipped case that names the folder (pytest's reason for an empty list, "got empty parameter set", names none)."""
    reason = f"golden set {path} is absent (set WAN_ANIMATE_GOLDEN)"
    return [pytest.param(*([None] * arguments), marks=pytest.mark.skip(reason=reason), id="absent")]


def load_pack():
    """Import the repository's __init__.py as a package, the way ComfyUI imports a custom node."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    spec = importlib.util.spec_from_file_location(
        PACK_MODULE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory):
    """A real ComfyUI with this pack, shared by the session (skips unless COMFYUI_PATH is set)."""
    from comfyui_server import release_shared_comfyui, require_comfyui, shared_comfyui

    require_comfyui()
    server = shared_comfyui(tmp_path_factory.mktemp("comfyui"))
    yield server
    release_shared_comfyui()


@pytest.fixture(scope="session")
def pack():
    return load_pack()


def assert_close_golden(ours, golden, rel: float, name: str) -> float:
    """Golden comparison: max |ours - golden| <= rel * max(1, max |golden|); returns the error."""
    ours = ours.detach().float().cpu()
    golden = golden.float()
    assert ours.shape == golden.shape, f"{name}: shape {tuple(ours.shape)} != golden {tuple(golden.shape)}"
    err = (ours - golden).abs().max().item()
    bound = rel * max(1.0, golden.abs().max().item())
    assert err <= bound, f"{name}: max error {err:.3e} exceeds {bound:.3e}"
    return err
