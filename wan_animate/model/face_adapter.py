"""Face adapter of Wan-Animate: cross-attention from each latent frame's video tokens to that frame's face tokens."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..runtime.attention import attention
from .dit_blocks import RMSNorm, layer_norm_float32


class FaceBlock(nn.Module):
    """Official `face_adapter.fuser_blocks.N`: returns the residual to add to the video tokens."""

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.linear1_kv = nn.Linear(dim, 2 * dim)
        self.linear1_q = nn.Linear(dim, dim)
        self.linear2 = nn.Linear(dim, dim)
        self.q_norm = RMSNorm(head_dim, eps)
        self.k_norm = RMSNorm(head_dim, eps)
        self.pre_norm_feat = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.pre_norm_motion = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)

    def forward(self, x: torch.Tensor, motion_vec: torch.Tensor) -> torch.Tensor:
        """x [B, T * S, dim] video tokens (frame-major), motion_vec [B, T, N, dim] -> residual [B, T * S, dim].

        Computes in motion_vec's dtype; token j of frame t attends only to the N motion tokens of frame t.
        """
        batch, frames, tokens, _ = motion_vec.shape
        if x.shape[1] % frames:
            raise ValueError(f"{x.shape[1]} video tokens do not split into the {frames} frames of motion_vec")
        dtype = motion_vec.dtype
        motion = layer_norm_float32(self.pre_norm_motion, motion_vec).to(dtype)
        feat = layer_norm_float32(self.pre_norm_feat, x).to(dtype)

        k, v = self.linear1_kv(motion).unflatten(-1, (2, self.num_heads, -1)).unbind(-3)  # each [B, T, N, H, D]
        q = self.linear1_q(feat).unflatten(-1, (self.num_heads, -1))  # [B, T * S, H, D]
        q = self.q_norm(q).to(dtype)
        k = self.k_norm(k).to(dtype)

        q = q.unflatten(1, (frames, -1)).flatten(0, 1)  # [B * T, S, H, D]
        k = k.flatten(0, 1)  # [B * T, N, H, D]
        v = v.flatten(0, 1)
        out = attention(q, k, v).flatten(-2)  # [B * T, S, dim]
        return self.linear2(out.unflatten(0, (batch, frames)).flatten(1, 2))  # [B, T * S, dim]


class FaceAdapter(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_blocks: int, eps: float = 1e-6):
        super().__init__()
        self.fuser_blocks = nn.ModuleList([FaceBlock(dim, num_heads, eps) for _ in range(num_blocks)])
