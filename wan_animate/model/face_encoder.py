"""Face encoder of Wan-Animate: per-frame motion vectors -> per-latent-frame face tokens.

Causal temporal convolutions (replicate padding on the left) reduce F face frames to ceil(ceil(F / 2) / 2) steps,
split into `num_heads` token streams, and a learned padding token is appended: output [B, T', heads + 1, dim].
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalConv1d(nn.Module):
    """Conv1d over time, left-padded by kernel - 1 with the first frame repeated."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.left_pad = kernel - 1
        self.conv = nn.Conv1d(in_ch, out_ch, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, T] -> [B, C', ceil(T / stride)]."""
        return self.conv(F.pad(x, (self.left_pad, 0), mode="replicate"))


class FaceEncoder(nn.Module):
    """Official `face_encoder`: [B, F, motion_dim] -> [B, T', num_heads + 1, dim]."""

    def __init__(self, in_dim: int, dim: int, hidden_dim: int = 1024, num_heads: int = 4):
        super().__init__()
        self.num_heads = num_heads
        self.conv1_local = CausalConv1d(in_dim, hidden_dim * num_heads, 3, stride=1)
        self.conv2 = CausalConv1d(hidden_dim, hidden_dim, 3, stride=2)
        self.conv3 = CausalConv1d(hidden_dim, hidden_dim, 3, stride=2)
        self.norm1 = nn.LayerNorm(hidden_dim, eps=1e-6, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(hidden_dim, eps=1e-6, elementwise_affine=False)
        self.norm3 = nn.LayerNorm(hidden_dim, eps=1e-6, elementwise_affine=False)
        self.out_proj = nn.Linear(hidden_dim, dim)
        self.padding_tokens = nn.Parameter(torch.zeros(1, 1, 1, dim))

    @staticmethod
    def _norm_act(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm + SiLU (float32) over the channels of x [N, C, T]; returns [N, C, T] in x's dtype."""
        return F.silu(norm(x.transpose(1, 2).float())).to(x.dtype).transpose(1, 2)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        """motion [B, F, in_dim] -> [B, T', num_heads + 1, dim], computed in motion's dtype (the model's compute
        dtype: a layer stored in fp8 is upcast to it, so no stored weight decides the dtype)."""
        batch = motion.shape[0]
        x = motion.transpose(1, 2)  # [B, in_dim, F]
        x = self.conv1_local(x)  # [B, heads * hidden, F]
        x = x.unflatten(1, (self.num_heads, -1)).flatten(0, 1)  # [B * heads, hidden, F]
        x = self._norm_act(self.norm1, x)
        x = self._norm_act(self.norm2, self.conv2(x))
        x = self._norm_act(self.norm3, self.conv3(x))  # [B * heads, hidden, T']
        x = self.out_proj(x.transpose(1, 2))  # [B * heads, T', dim]
        x = x.unflatten(0, (batch, self.num_heads)).transpose(1, 2)  # [B, T', heads, dim]
        padding = self.padding_tokens.to(x.dtype).expand(batch, x.shape[1], 1, -1)
        return torch.cat([x, padding], dim=2)
