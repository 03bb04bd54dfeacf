"""Soft imports of ComfyUI services, with plain fallbacks so the nodes also run without ComfyUI."""
from __future__ import annotations

import os
from typing import Callable

import torch

from wan_animate.runtime.devices import check_supported_device
from wan_animate.runtime.pinned import PinningPolicy

try:
    import comfy.model_management as model_management
except ImportError:
    model_management = None

try:
    import comfy.utils as comfy_utils
except ImportError:
    comfy_utils = None

try:
    import folder_paths
except ImportError:
    folder_paths = None

try:
    from comfy.cli_args import args as comfy_args
except ImportError:
    comfy_args = None


def _fallback_models_dir() -> str:
    """Models folder outside ComfyUI: $WAN_ANIMATE_MODELS_DIR, else ./models."""
    return os.environ.get("WAN_ANIMATE_MODELS_DIR", os.path.join(os.getcwd(), "models"))


def torch_device() -> torch.device:
    """The device ComfyUI computes on, or CUDA when available, else the CPU; other kinds of device (mps, xpu) are
    refused with a clear error (wan_animate.runtime.devices.check_supported_device)."""
    if model_management is not None:
        return check_supported_device(model_management.get_torch_device())
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where ComfyUI parks weights that are not in use."""
    if model_management is not None:
        return model_management.unet_offload_device()
    return torch.device("cpu")


def free_memory(required_bytes: int, device: torch.device) -> None:
    """Ask ComfyUI to unload its models until `required_bytes` are free on `device`."""
    if model_management is not None and device.type != "cpu":
        model_management.free_memory(required_bytes, device)


def pinning_policy() -> PinningPolicy:
    """ComfyUI's pinned-memory setting: off with --disable-pinned-memory (or on GPUs it does not pin for), else
    what is left of its budget (MAX_PINNED_MEMORY minus what ComfyUI pinned itself). Outside ComfyUI: no limit."""
    if model_management is None:
        return PinningPolicy()
    limit = getattr(model_management, "MAX_PINNED_MEMORY", None)
    if limit is None:  # a ComfyUI without a pinned-memory budget
        return PinningPolicy()
    if limit <= 0:
        return PinningPolicy(enabled=False)
    used = getattr(model_management, "TOTAL_PINNED_MEMORY", 0)
    return PinningPolicy(budget_bytes=max(0, int(limit - used)))


def soft_empty_cache() -> None:
    if model_management is not None:
        model_management.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed Cancel."""
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()


def progress_callback(total: int) -> Callable[[int, object], None]:
    """A per-step callback driving ComfyUI's progress bar (a no-op outside ComfyUI)."""
    if comfy_utils is None:
        return lambda step, preview=None: None
    bar = comfy_utils.ProgressBar(total)

    def update(step: int, preview=None) -> None:
        bar.update_absolute(step, total, preview)

    return update


def preview_max_side() -> int | None:
    """Largest side of sampler previews under ComfyUI's preview setting (--preview-method, or the one the frontend
    sends with the prompt); None when previews are off ("none", ComfyUI's default, or outside ComfyUI)."""
    if comfy_args is None:
        return None
    method = getattr(comfy_args.preview_method, "value", comfy_args.preview_method)
    if method is None or str(method) == "none":
        return None
    return int(getattr(comfy_args, "preview_size", 512))


def model_filenames(folder: str) -> list[str]:
    """Files of one of ComfyUI's model folders (`diffusion_models`, `vae`, `loras`, `detection`, ...)."""
    if folder_paths is not None:
        try:
            return folder_paths.get_filename_list(folder)
        except KeyError:
            return []
    root = os.path.join(_fallback_models_dir(), folder)
    if not os.path.isdir(root):
        return []
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
    )


def model_path(folder: str, name: str) -> str:
    """Absolute path of `name` inside model folder `folder`; a clear error when it is not there."""
    if os.path.isabs(name) and os.path.exists(name):
        return name
    if folder_paths is not None:
        try:
            path = folder_paths.get_full_path(folder, name)
        except KeyError:
            path = None
    else:
        candidate = os.path.join(_fallback_models_dir(), folder, name)
        path = candidate if os.path.exists(candidate) else None
    if path is None:
        raise FileNotFoundError(f"model file '{name}' was not found in the models/{folder}/ folder")
    return path


def register_model_folder(folder: str, extensions: set[str]) -> None:
    """Make ComfyUI list `models/<folder>/` (for example `detection`, `sam2`) if it does not already."""
    if folder_paths is None:
        return
    if folder not in folder_paths.folder_names_and_paths:
        path = os.path.join(folder_paths.models_dir, folder)
        folder_paths.folder_names_and_paths[folder] = ([path], set(extensions))


def output_directory() -> str:
    """ComfyUI's output folder, or $WAN_ANIMATE_OUTPUT_DIR / ./output outside ComfyUI."""
    if folder_paths is not None:
        return folder_paths.get_output_directory()
    return os.environ.get("WAN_ANIMATE_OUTPUT_DIR", os.path.join(os.getcwd(), "output"))


def save_previews(frames_u8, kind: str, max_frames: int = 16, max_side: int = 256) -> list[dict]:
    """Save up to `max_frames` evenly spaced frames [F, H, W, 3] uint8 as small PNGs in ComfyUI's temp folder and
    return their ComfyUI image records (an empty list outside ComfyUI)."""
    if folder_paths is None or len(frames_u8) == 0:
        return []
    import numpy as np
    from PIL import Image

    temp_dir = folder_paths.get_temp_directory()
    os.makedirs(temp_dir, exist_ok=True)
    picks = np.unique(np.linspace(0, len(frames_u8) - 1, min(max_frames, len(frames_u8))).round().astype(int))
    records = []
    stamp = f"{os.getpid()}_{id(frames_u8):x}"
    for index in picks:
        image = Image.fromarray(np.asarray(frames_u8[index]))
        image.thumbnail((max_side, max_side))
        name = f"wan_animate_{kind}_{stamp}_{index:05d}.png"
        image.save(os.path.join(temp_dir, name), compress_level=1)
        records.append({"filename": name, "subfolder": "", "type": "temp"})
    return records


def input_directory() -> str:
    """ComfyUI's input folder (uploads), or $WAN_ANIMATE_INPUT_DIR / ./input outside ComfyUI."""
    if folder_paths is not None:
        return folder_paths.get_input_directory()
    return os.environ.get("WAN_ANIMATE_INPUT_DIR", os.path.join(os.getcwd(), "input"))


def output_path(relative: str, input_name: str) -> str:
    """The real path of `relative` inside ComfyUI's output folder (symlinks resolved).

    Raises ValueError naming `input_name` when the path leaves the output folder (`..`, an absolute path elsewhere,
    a symlink pointing out of it).
    """
    root = os.path.realpath(output_directory())
    resolved = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([root, resolved]) != root:
        raise ValueError(
            f"{input_name} is {relative!r}, which resolves to {resolved!r} outside ComfyUI's output folder "
            f"{root!r}; give a folder name inside the output folder, for example 'wan_resume'"
        )
    return resolved
