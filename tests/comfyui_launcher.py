"""Run ComfyUI's main.py in this process after the CPU-torch accommodations described in docs/COMFYUI_TESTING.md.

``cd $COMFYUI_PATH && python /path/to/tests/comfyui_launcher.py --cpu --port 8188``; tests/comfyui_server.py starts
ComfyUI through it. Standard library and torch only: it runs with ComfyUI's folder, not this repository, on sys.path.
"""
from __future__ import annotations

import sys
from pathlib import Path

CPU_SITE_DIR = "cpu_site"  # optional folder inside COMFYUI_PATH with torchvision etc. installed by `pip --target`

_torchvision_op_library = None


def _import_torchvision_without_compiled_ops() -> None:
    """Make `import torchvision` work when its compiled ops cannot load (PyPI's CUDA-linked build beside CPU torch).

    torchvision registers fake kernels for `torchvision::nms`/`qnms` at import, which fails when the compiled library
    did not define those ops. Defining their schemas lets the pure-Python parts (transforms, which ComfyUI imports at
    start) load; calling those two ops then raises. A torchvision whose ops load is left untouched.
    """
    global _torchvision_op_library
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _torchvision_op_library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _torchvision_op_library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401,F811

    print(f"[comfyui_launcher] torchvision {torchvision.__version__} imported without its compiled ops", flush=True)


def launch_comfyui_here(argv: list[str]) -> None:
    """Run ./main.py (cwd = the ComfyUI checkout) with `argv`, after the CPU-site and torchvision accommodations."""
    import runpy

    comfyui = Path.cwd()
    if not (comfyui / "main.py").is_file():
        raise SystemExit(f"run this from a ComfyUI checkout: {comfyui}/main.py does not exist")
    sys.path[0] = str(comfyui)
    cpu_site = comfyui / CPU_SITE_DIR
    if cpu_site.is_dir():
        sys.path.insert(1, str(cpu_site))
    _import_torchvision_without_compiled_ops()
    sys.argv = [str(comfyui / "main.py"), *argv]
    runpy.run_path(str(comfyui / "main.py"), run_name="__main__")


if __name__ == "__main__":
    launch_comfyui_here(sys.argv[1:])
