"""A complete tiny model set in ComfyUI's folder layout, for running whole workflows on CPU in seconds.

`write_tiny_models(root)` writes, under `root`:
  models/diffusion_models/wan_animate_tiny.safetensors  tiny DiT (512-px face encoder, official key layout, bf16)
  models/diffusion_models/wan_animate_tiny_Q8_0.gguf    the same DiT as a GGUF file (Q8_0 Linear layers)
  models/loras/wan_animate_tiny_lora.safetensors        a LoRA on its quantised and float Linear layers
  models/vae/wan_vae_tiny.safetensors                   tiny Wan2.1 VAE
  models/detection/tiny_yolo.onnx, tiny_vitpose.onnx    detector / pose fixtures (tests/onnx_fixtures.py)
  input/wan_animate_tiny_embeds.safetensors             context / context_null / clip_fea of the tiny sizes
  input/wan_animate_character.png, input/wan_animate_driving.mp4   a red figure, and a video of it moving
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from helpers_dit import build_tiny_dit, tiny_config
from helpers_gguf import Q, write_gguf
from helpers_vae import random_vae
from onnx_fixtures import export_detector, export_pose_model

FACE_CHANNELS = (4, 4, 4, 4, 4, 4, 4, 8)  # 2 ** (8 + 1) = 512-px face crops, as the preprocessing makes
VIDEO_FRAMES = 13
VIDEO_FPS = 16
VIDEO_SIZE = (96, 128)  # (height, width) of the driving video
CHARACTER_SIZE = (128, 96)
FILES = {
    "dit": "wan_animate_tiny.safetensors",
    "gguf": "wan_animate_tiny_Q8_0.gguf",
    "lora": "wan_animate_tiny_lora.safetensors",
    "vae": "wan_vae_tiny.safetensors",
    "detector": "tiny_yolo.onnx",
    "pose": "tiny_vitpose.onnx",
    "embeds": "wan_animate_tiny_embeds.safetensors",
    "character": "wan_animate_character.png",
    "video": "wan_animate_driving.mp4",
}


def figure_frame(size: tuple[int, int], shift: int) -> np.ndarray:
    """A dark frame with a red-and-green figure (the detector fixture boxes red) shifted right by `shift` px."""
    height, width = size
    frame = np.full((height, width, 3), 30, np.uint8)
    top, left = height // 6, width // 3 + shift
    frame[top:height - height // 8, left:left + width // 4] = (220, 200, 40)
    return frame


def write_video(path: Path, frames: np.ndarray, fps: int = VIDEO_FPS) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "10"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def tiny_lora(dit: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rank-2 deltas on every block's first FFN layer (Q8_0 in the GGUF file) and one attention projection (F32)."""
    gen = torch.Generator().manual_seed(6)
    state = {}
    for name in ("blocks.0.self_attn.q", *(f"blocks.{i}.ffn.0" for i in range(len(dit.blocks)))):
        out_features, in_features = dit.get_submodule(name).weight.shape
        state[f"diffusion_model.{name}.lora_down.weight"] = torch.randn(2, in_features, generator=gen) * 0.1
        state[f"diffusion_model.{name}.lora_up.weight"] = torch.randn(out_features, 2, generator=gen) * 0.1
    return state


def write_tiny_models(root: str | Path) -> dict[str, str]:
    """Write the set under `root`; returns FILES (file names as the workflows reference them)."""
    root = Path(root)
    folders = {name: root / "models" / name for name in ("diffusion_models", "vae", "detection", "loras")}
    for folder in (*folders.values(), root / "input"):
        folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config(motion_channels=FACE_CHANNELS)
    dit = build_tiny_dit(seed=3, config=config)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in dit.state_dict().items()},
              str(folders["diffusion_models"] / FILES["dit"]))
    write_gguf(dit, folders["diffusion_models"] / FILES["gguf"], Q.Q8_0, prefix="model.diffusion_model.")
    save_file(tiny_lora(dit), str(folders["loras"] / FILES["lora"]))
    save_file({k: v.contiguous() for k, v in random_vae().state_dict().items()}, str(folders["vae"] / FILES["vae"]))
    export_detector(folders["detection"] / FILES["detector"])
    export_pose_model(folders["detection"] / FILES["pose"])
    gen = torch.Generator().manual_seed(5)
    save_file({
        "context": torch.randn(7, config.text_dim, generator=gen),
        "context_null": torch.randn(5, config.text_dim, generator=gen),
        "clip_fea": torch.randn(1, 257, config.clip_dim, generator=gen),
    }, str(root / "input" / FILES["embeds"]))
    Image.fromarray(figure_frame(CHARACTER_SIZE, 0)).save(root / "input" / FILES["character"])
    video = np.stack([figure_frame(VIDEO_SIZE, (i % 5) * 3) for i in range(VIDEO_FRAMES)])
    write_video(root / "input" / FILES["video"], video)
    return dict(FILES)
