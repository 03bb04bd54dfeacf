"""Tiny Wan-Animate DiTs and inputs for tests (CPU, milliseconds per forward).

`build_tiny_dit(seed)` gives a float32 model whose weights are bfloat16-representable (like the golden set), so
saving it as bf16 and loading it back is exact.
"""
from __future__ import annotations

import torch

from wan_animate.model.dit import WanAnimateConfig, WanAnimateDiT


def tiny_config(**overrides) -> WanAnimateConfig:
    """A small but complete configuration: 6 blocks (face blocks after 0 and 5), 16-px face crops."""
    sizes = dict(
        dim=32, ffn_dim=48, num_heads=2, num_layers=6, in_dim=36, out_dim=16, freq_dim=32, text_dim=24,
        clip_dim=20, motion_encoder_dim=16, motion_dim=4, motion_channels=(4, 8, 8), face_hidden_dim=8, face_heads=4,
    )
    sizes.update(overrides)
    return WanAnimateConfig(**sizes)


def build_tiny_dit(seed: int = 0, config: WanAnimateConfig | None = None) -> WanAnimateDiT:
    """A float32 tiny DiT with random bf16-representable parameters (buffers such as blur kernels untouched)."""
    model = WanAnimateDiT(config or tiny_config())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            values = torch.randn(param.shape, generator=gen) * 0.3
            if name.endswith(("norm_q.weight", "norm_k.weight", "norm_k_img.weight", "q_norm.weight", "k_norm.weight",
                              "norm3.weight", "proj.0.weight", "proj.4.weight")):
                values = 1.0 + values / 3
            param.copy_(values.to(torch.bfloat16).float())
    return model.eval().requires_grad_(False)


def face_frames_for(latent_frames: int) -> int:
    """Face frames that the face encoder turns into latent_frames - 1 face latents: 4 * (T - 2) + 1."""
    return 4 * (latent_frames - 2) + 1


def tiny_inputs(
    config: WanAnimateConfig | None = None,
    frames: int = 3,
    height: int = 4,
    width: int = 6,
    mode: str = "animate",
    seed: int = 1,
    text_tokens: int = 5,
    clip_tokens: int = 7,
) -> dict[str, torch.Tensor]:
    """Random inputs for one forward: x, t, context, clip_fea, y, pose_latents and face_pixels in [-1, 1].

    mode "animate": y = mask 1 on the reference frame only and a zero condition after it;
    mode "replace": a random 0/1 mask and a non-zero condition (background latents) on every frame.
    """
    config = config or tiny_config()
    gen = torch.Generator().manual_seed(seed)
    latent = 16
    y_channels = config.in_dim - latent
    mask_channels = y_channels - latent
    mask = torch.zeros(mask_channels, frames, height, width)
    mask[:, 0] = 1.0
    condition = torch.zeros(latent, frames, height, width)
    condition[:, 0] = torch.randn(latent, height, width, generator=gen)
    if mode == "replace":
        mask[:, 1:] = (torch.rand(mask_channels, frames - 1, height, width, generator=gen) > 0.5).float()
        condition[:, 1:] = torch.randn(latent, frames - 1, height, width, generator=gen)
    elif mode != "animate":
        raise ValueError(f"mode must be 'animate' or 'replace'; got {mode!r}")
    size = config.face_size
    return {
        "x": torch.randn(latent, frames, height, width, generator=gen),
        "t": torch.tensor([637.0]),
        "context": torch.randn(text_tokens, config.text_dim, generator=gen),
        "clip_fea": torch.randn(1, clip_tokens, config.clip_dim, generator=gen),
        "y": torch.cat([mask, condition]),
        "pose_latents": torch.randn(config.pose_dim, frames - 1, height, width, generator=gen),
        "face_pixels": torch.rand(1, 3, face_frames_for(frames), size, size, generator=gen) * 2 - 1,
    }


def run_dit(model: WanAnimateDiT, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """encode_face + forward on `tiny_inputs`-style inputs."""
    with torch.no_grad():
        motion_vec = model.encode_face(inputs["face_pixels"])
        return model(inputs["x"], inputs["t"], inputs["context"], inputs["clip_fea"], inputs["y"],
                     inputs["pose_latents"], motion_vec)
