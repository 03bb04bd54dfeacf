"""The DiT kept on the GPU between runs: listed among real ComfyUI's loaded models, evicted by ComfyUI's memory
management (free_memory, unload_all_models), protected while a run asks for room, dropped once gone. Runs ComfyUI's
model_management (CPU mode) in a subprocess; skipped unless COMFYUI_PATH names a ComfyUI checkout."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent('''
    import gc, sys
    sys.path[:0] = [sys.argv[1], sys.argv[2]]
    import comfy.options
    comfy.options.enable_args_parsing()
    sys.argv = ["main.py", "--cpu"]
    import comfy.model_management as mm
    import torch
    from nodes import comfy_compat

    class Spy(torch.nn.Linear):
        """Stands for a GPU-resident DiT: its weights are on 'meta' until moved to the CPU."""
        def __init__(self):
            super().__init__(4, 4, device="meta")
            self.moves = []
        def to(self, *args, **kwargs):
            self.moves.append(args)
            return self.to_empty(device="cpu")

    cpu = torch.device("cpu")
    spy = Spy()
    comfy_compat.track_resident_model(spy, cpu, 1000)
    comfy_compat.track_resident_model(spy, cpu, 1000)  # listed once
    entries = [e for e in mm.current_loaded_models if isinstance(e, comfy_compat.ResidentModel)]
    assert len(entries) == 1 and entries[0].model_loaded_memory() == 1000
    assert mm.loaded_models(only_currently_used=True) == []

    mm.free_memory(1e30, cpu, keep_loaded=entries)  # the sampler asking for room keeps its own model
    assert spy.moves == [] and entries[0] in mm.current_loaded_models

    mm.unload_all_models()  # ComfyUI's "free memory": the model goes to host memory, the entry leaves the list
    assert spy.moves == [("cpu",)] and not mm.current_loaded_models
    comfy_compat.track_resident_model(spy, cpu, 1000)  # parked: not listed
    assert not mm.current_loaded_models

    other = Spy()
    comfy_compat.track_resident_model(other, cpu, 500)
    del other
    gc.collect()
    mm.cleanup_models()  # a released model's entry is dropped
    assert not mm.current_loaded_models
    print("ok")
''')


def test_resident_model_follows_comfyui_memory_management():
    comfyui = os.environ.get("COMFYUI_PATH")
    if not comfyui or not (Path(comfyui) / "comfy" / "model_management.py").is_file():
        pytest.skip("COMFYUI_PATH does not name a ComfyUI checkout")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO), comfyui], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("keep", [True, False])
def test_handle_keeps_a_fully_resident_model_on_the_gpu(tmp_path, keep):
    import torch
    from safetensors.torch import save_file

    from helpers_dit import build_tiny_dit
    from wan_animate.loading.model_handle import DiTHandle, DiTOptions

    model = build_tiny_dit(seed=1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "dit.safetensors"))
    handle = DiTHandle(str(tmp_path / "dit.safetensors"), DiTOptions(dtype=torch.float32, keep_on_device=keep))
    device = torch.device("cuda")
    with handle.activate(device, tokens=64) as dit:
        assert dit.device.type == "cuda"
    assert handle.is_resident(device) == keep
    with handle.activate(device, tokens=64) as again:
        assert again is dit and again.device.type == "cuda"
    handle.park()
    assert not handle.is_resident(device) and handle.model().device.type == "cpu"
