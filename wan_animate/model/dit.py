"""The Wan-Animate diffusion transformer (official parameter names, one video per call).

Forward, per sampling step:
  tokens = patch_embed(concat(x, y)); tokens[frames 1..T-1] += pose_patch_embed(pose_latents)
  for i, block in enumerate(blocks): tokens = block(tokens); if i % 5 == 0: tokens += face_block[i // 5](tokens, motion_vec)
  out = unpatchify(head(tokens))
`motion_vec` comes from `encode_face` (motion encoder + face encoder), computed once per segment and reused.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from .dit_blocks import ImageProjection, OutputHead, TransformerBlock, float32_linear
from .face_adapter import FaceAdapter, FaceBlock
from .face_encoder import FaceEncoder
from .motion_encoder import OFFICIAL_CHANNELS, MotionEncoder
from .rope import RopeTables, rope_tables

MOTION_ENCODER_CHUNK = 8  # face frames per motion-encoder batch, as the official code


@dataclass(frozen=True)
class WanAnimateConfig:
    """Sizes of a Wan-Animate DiT. Defaults are the released Animate-14B."""

    dim: int = 5120
    ffn_dim: int = 13824
    num_heads: int = 40
    num_layers: int = 40
    in_dim: int = 36
    out_dim: int = 16
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    eps: float = 1e-6
    patch_size: tuple[int, int, int] = (1, 2, 2)
    pose_dim: int = 16
    clip_dim: int = 1280
    motion_encoder_dim: int = 512
    motion_dim: int = 20
    motion_channels: tuple[int, ...] = OFFICIAL_CHANNELS
    face_hidden_dim: int = 1024
    face_heads: int = 4
    face_block_interval: int = 5

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def num_face_blocks(self) -> int:
        """One face block after every `face_block_interval`-th transformer block, starting with block 0."""
        return math.ceil(self.num_layers / self.face_block_interval)

    @property
    def face_size(self) -> int:
        """Side of the square face crops the motion encoder takes (512 for the released model)."""
        return 2 ** (len(self.motion_channels) + 1)

    def __post_init__(self) -> None:
        if self.dim % self.num_heads or self.head_dim % 2:
            raise ValueError(f"dim {self.dim} must split into {self.num_heads} heads of an even size")


@dataclass
class StepInputs:
    """The embedded inputs of one forward: video tokens [1, L, dim] (frame-major over `grid` = (T, h', w')), time
    embedding [1, dim] and modulation [1, 6, dim], CLIP and text context tokens, RoPE tables (rows [L, 1, head_dim / 2])
    and motion_vec [1, T, heads + 1, dim] (None: no face input, the face adapter is left out)."""

    tokens: torch.Tensor
    grid: tuple[int, int, int]
    time_emb: torch.Tensor
    time_mod: torch.Tensor
    context_img: torch.Tensor
    context_text: torch.Tensor
    rope: RopeTables
    motion_vec: torch.Tensor | None


def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """Timesteps [B] -> [B, dim] float32: cos then sin of t * 10000^(-i / (dim/2)), formed in float64."""
    half = dim // 2
    inv_freq = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = torch.outer(t.to(torch.float64), inv_freq)
    return torch.cat([angles.cos(), angles.sin()], dim=1).float()


class WanAnimateDiT(nn.Module):
    """Wan-Animate transformer; `state_dict()` keys equal the official checkpoint's."""

    def __init__(self, config: WanAnimateConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.patch_embedding = nn.Conv3d(c.in_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.pose_patch_embedding = nn.Conv3d(c.pose_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"), nn.Linear(c.dim, c.dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(c.freq_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 6 * c.dim))
        self.blocks = nn.ModuleList(
            [TransformerBlock(c.dim, c.ffn_dim, c.num_heads, c.eps) for _ in range(c.num_layers)]
        )
        self.head = OutputHead(c.dim, c.out_dim * math.prod(c.patch_size), c.eps)
        self.img_emb = ImageProjection(c.clip_dim, c.dim)
        self.motion_encoder = MotionEncoder(c.motion_channels, c.motion_encoder_dim, c.motion_dim)
        self.face_adapter = FaceAdapter(c.dim, c.num_heads, c.num_face_blocks, c.eps)
        self.face_encoder = FaceEncoder(c.motion_encoder_dim, c.dim, c.face_hidden_dim, c.face_heads)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype activations are computed in outside the float32 parts: that of the patch embedding, which every
        loader keeps in the compute dtype (Linear layers alone may stay fp8); no other layer's weight decides it."""
        return self.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    # ----- face motion -----

    def motion_features(self, face_pixels: torch.Tensor) -> torch.Tensor:
        """Face crops [1, 3, F, S, S] in [-1, 1] -> motion vectors [F, motion_encoder_dim] (float32)."""
        size = self.config.face_size
        if face_pixels.ndim != 5 or face_pixels.shape[0] != 1 or face_pixels.shape[1] != 3 \
                or tuple(face_pixels.shape[3:]) != (size, size):
            raise ValueError(f"face_pixels must be [1, 3, F, {size}, {size}]; got {tuple(face_pixels.shape)}")
        frames = face_pixels[0].transpose(0, 1).to(device=self.device, dtype=self.compute_dtype)  # [F, 3, S, S]
        chunks = frames.split(MOTION_ENCODER_CHUNK)
        return torch.cat([self.motion_encoder(chunk) for chunk in chunks])

    def encode_face(self, face_pixels: torch.Tensor) -> torch.Tensor:
        """Face crops [1, 3, F, S, S] in [-1, 1] -> motion_vec [1, T, heads + 1, dim] in the compute dtype.

        T = 1 + ceil(ceil(F / 2) / 2): a zero slot for the reference frame, then one entry per latent frame.
        """
        return self.face_tokens(self.motion_features(face_pixels))

    def face_tokens(self, motion: torch.Tensor) -> torch.Tensor:
        """Motion vectors [F, motion_encoder_dim] (from `motion_features`) -> motion_vec [1, T, heads + 1, dim]."""
        motion = motion.to(device=self.device, dtype=self.compute_dtype)
        tokens = self.face_encoder(motion[None])  # [1, T - 1, heads + 1, dim]
        return torch.cat([torch.zeros_like(tokens[:, :1]), tokens], dim=1).to(self.compute_dtype)

    # ----- denoising step -----

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        clip_fea: torch.Tensor,
        y: torch.Tensor,
        pose_latents: torch.Tensor | None,
        motion_vec: torch.Tensor | None,
        pose_strength: float = 1.0,
        face_strength: float = 1.0,
    ) -> torch.Tensor:
        """One prediction (flow velocity) for one video.

        x [16, T, h, w] noisy latents, t [1] timestep (0..1000), context [L <= text_len, text_dim] text embeddings,
        clip_fea [1, 257, clip_dim], y [in_dim - 16, T, h, w] mask + condition, pose_latents [16, T - 1, h, w],
        motion_vec [1, T, heads + 1, dim] from `encode_face`. Returns [out_dim, T, h, w] float32.
        pose_strength scales the embedded pose added to the tokens, face_strength the face adapter's residuals
        (1: the official model; 0, like passing None, leaves that branch out).
        """
        step = self.prepare(x, t, context, clip_fea, y, pose_latents, motion_vec, pose_strength)
        tokens = self.run_blocks(step, step.tokens, step.rope, face_strength)
        return self.unpatchify(self.head(tokens, step.time_emb)[0], step.grid)

    def run_blocks(
        self,
        step: "StepInputs",
        tokens: torch.Tensor,
        rope: RopeTables,
        face_strength: float,
        face_residual: Callable[[FaceBlock, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Every transformer block over `tokens` [B, L, dim] (all of the step's tokens, or one rank's shard with its
        `rope` rows), the face adapter's residual added after every `face_block_interval`-th block, scaled by
        `face_strength` (left out at 0 or without motion_vec). `face_residual(block, tokens)` computes that residual
        (default: the face block on `step.motion_vec`). Returns the residual stream in float32."""
        residual_of = face_residual or (lambda block, x: block(x, step.motion_vec))
        use_face = step.motion_vec is not None and face_strength != 0
        interval = self.config.face_block_interval
        for index, block in enumerate(self.blocks):
            tokens = block(tokens, step.time_mod, step.context_img, step.context_text, rope)
            if use_face and index % interval == 0:
                residual = residual_of(self.face_adapter.fuser_blocks[index // interval], tokens)
                tokens = torch.add(tokens, residual, alpha=face_strength)  # float32: residual promoted in the add
        return tokens

    def prepare(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        clip_fea: torch.Tensor,
        y: torch.Tensor,
        pose_latents: torch.Tensor | None,
        motion_vec: torch.Tensor | None,
        pose_strength: float = 1.0,
    ) -> "StepInputs":
        """Check the inputs of `forward` and embed them: everything the transformer blocks take (the pose tokens
        scaled by `pose_strength`; motion_vec None when no face input is given)."""
        self._check_inputs(x, t, context, clip_fea, y, pose_latents, motion_vec)
        dtype, device = self.compute_dtype, self.device

        video = torch.cat([x, y]).to(device=device, dtype=dtype)[None]  # [1, in_dim, T, h, w]
        tokens = self.patch_embedding(video)  # [1, dim, T, h', w']
        if pose_latents is not None and pose_strength != 0:
            pose = self.pose_patch_embedding(pose_latents.to(device=device, dtype=dtype)[None])
            if pose_strength != 1:
                pose = pose * pose_strength
            tokens = torch.cat([tokens[:, :, :1], tokens[:, :, 1:] + pose], dim=2)
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2)  # [1, L, dim]

        time_emb, time_mod = self._time_embedding(t.to(device))
        return StepInputs(
            tokens=tokens,
            grid=grid,
            time_emb=time_emb,
            time_mod=time_mod,
            context_img=self.img_emb(clip_fea.to(device), dtype),  # [1, 257, dim]
            context_text=self._text_context(context.to(device), dtype),  # [1, text_len, dim]
            rope=rope_tables(self.config.head_dim, grid, device),
            motion_vec=None if motion_vec is None else motion_vec.to(device=device, dtype=dtype),
        )

    def _time_embedding(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t [1] -> (embedding [1, dim], block modulation [1, 6, dim]), float32."""
        lin1, act, lin2 = self.time_embedding
        emb = float32_linear(lin2, act(float32_linear(lin1, sinusoidal_embedding(self.config.freq_dim, t))))
        act_p, lin_p = self.time_projection
        return emb, float32_linear(lin_p, act_p(emb)).unflatten(1, (6, self.config.dim))

    def _text_context(self, context: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[L, text_dim] zero-padded to text_len tokens -> [1, text_len, dim]."""
        padded = context.new_zeros(self.config.text_len, context.shape[1])
        padded[: context.shape[0]] = context
        return self.text_embedding(padded.to(dtype)[None])

    def unpatchify(self, patches: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[L, out_dim * pt * ph * pw] -> [out_dim, T, h, w]."""
        pt, ph, pw = self.config.patch_size
        frames, rows, cols = grid
        u = patches.view(frames, rows, cols, pt, ph, pw, self.config.out_dim)
        u = u.permute(6, 0, 3, 1, 4, 2, 5)  # [C, T', pt, h', ph, w', pw]
        return u.reshape(self.config.out_dim, frames * pt, rows * ph, cols * pw)

    def _check_inputs(self, x, t, context, clip_fea, y, pose_latents, motion_vec) -> None:
        c = self.config
        if t.shape != (1,):
            raise ValueError(f"t must be [1] (one timestep for the one video); got {tuple(t.shape)}")
        if clip_fea.ndim != 3 or clip_fea.shape[0] != 1 or clip_fea.shape[2] != c.clip_dim:
            raise ValueError(f"clip_fea must be [1, tokens, {c.clip_dim}]; got {tuple(clip_fea.shape)}")
        if x.ndim != 4 or y.ndim != 4 or x.shape[1:] != y.shape[1:]:
            raise ValueError(f"x and y must be [C, T, h, w] with equal T, h, w; got {tuple(x.shape)}, {tuple(y.shape)}")
        if x.shape[0] + y.shape[0] != c.in_dim:
            raise ValueError(f"x ({x.shape[0]}) + y ({y.shape[0]}) channels must sum to in_dim {c.in_dim}")
        frames, height, width = x.shape[1:]
        pt, ph, pw = c.patch_size
        if frames % pt or height % ph or width % pw:
            raise ValueError(f"latent size {(frames, height, width)} is not divisible by the patch size {c.patch_size}")
        expected_pose = (c.pose_dim, frames - 1, height, width)
        if pose_latents is not None and tuple(pose_latents.shape) != expected_pose:
            raise ValueError(f"pose_latents must be {expected_pose}; got {tuple(pose_latents.shape)}")
        expected_motion = (1, frames // pt, c.face_heads + 1, c.dim)
        if motion_vec is not None and tuple(motion_vec.shape) != expected_motion:
            raise ValueError(
                f"motion_vec must be {expected_motion} (one slot per latent frame); got {tuple(motion_vec.shape)}"
            )
        if context.ndim != 2 or context.shape[0] > c.text_len or context.shape[1] != c.text_dim:
            raise ValueError(f"context must be [L <= {c.text_len}, {c.text_dim}]; got {tuple(context.shape)}")
