"""Building blocks of the Wan transformer: norms, self/cross attention, the modulated block, the output head.

Precision follows the official model under bf16 autocast: LayerNorms, the time modulation, the residual stream and
the head run in float32; Linear layers run in the compute dtype, which is the dtype of the `context` tensor handed to
each block (the dtype of the non-fp8 weights).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..runtime.attention import attention
from ..runtime.fp8 import linear_weight
from .rope import RopeTables, apply_rope


def float32_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A Linear layer evaluated in float32 whatever its storage dtype (time embedding, head)."""
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x.float(), linear_weight(layer, torch.float32), bias)


def layer_norm_float32(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm computed in float32 (affine parameters upcast); returns float32."""
    weight = None if norm.weight is None else norm.weight.float()
    bias = None if norm.bias is None else norm.bias.float()
    return F.layer_norm(x.float(), norm.normalized_shape, weight, bias, norm.eps)


class RMSNorm(nn.Module):
    """RMS normalisation over the last dim, normalised in float32 and cast back before the learned scale."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x, (x.shape[-1],), eps=self.eps)  # float32 inside, one kernel on CUDA
        return normed * self.weight.to(x.dtype)


class AttentionProjections(nn.Module):
    """The q / k / v / o projections with RMS qk-norm that the self- and cross-attention layers share."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)


class SelfAttention(AttentionProjections):
    """Full self-attention over the video tokens with RMS qk-norm and 3-D RoPE."""

    def forward(self, x: torch.Tensor, rope: RopeTables) -> torch.Tensor:
        """x [B, L, dim] in the compute dtype -> [B, L, dim]."""
        heads = (self.num_heads, -1)
        q = apply_rope(self.norm_q(self.q(x)).unflatten(-1, heads), rope)  # [B, L, H, D]
        k = apply_rope(self.norm_k(self.k(x)).unflatten(-1, heads), rope)
        v = self.v(x).unflatten(-1, heads)
        return self.o(self.attend(q, k, v).flatten(-2))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The attention core, [B, L, H, D] -> [B, L, H, D]; sequence-parallel runs replace it per instance."""
        return attention(q, k, v)


class CrossAttention(AttentionProjections):
    """Attention from the video tokens to the CLIP image tokens and the text tokens, the two results summed."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__(dim, num_heads, eps)
        self.k_img = nn.Linear(dim, dim)
        self.v_img = nn.Linear(dim, dim)
        self.norm_k_img = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, context_img: torch.Tensor, context_text: torch.Tensor) -> torch.Tensor:
        """x [B, L, dim], context_img [B, 257, dim], context_text [B, text_len, dim] -> [B, L, dim]."""
        heads = (self.num_heads, -1)
        q = self.norm_q(self.q(x)).unflatten(-1, heads)
        k_text = self.norm_k(self.k(context_text)).unflatten(-1, heads)
        v_text = self.v(context_text).unflatten(-1, heads)
        k_img = self.norm_k_img(self.k_img(context_img)).unflatten(-1, heads)
        v_img = self.v_img(context_img).unflatten(-1, heads)
        text_out = attention(q, k_text, v_text).flatten(-2)
        img_out = attention(q, k_img, v_img).flatten(-2)
        return self.o(text_out + img_out)


class TransformerBlock(nn.Module):
    """Wan attention block: modulated self-attention, cross-attention, modulated GELU(tanh) FFN."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, num_heads, eps)
        self.norm3 = nn.LayerNorm(dim, eps=eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(dim, num_heads, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(ffn_dim, dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, dim))

    def forward(
        self,
        x: torch.Tensor,
        time_mod: torch.Tensor,
        context_img: torch.Tensor,
        context_text: torch.Tensor,
        rope: RopeTables,
    ) -> torch.Tensor:
        """x [B, L, dim] (residual stream, float32 after the first block); time_mod [B, 6, dim] float32.

        Returns the updated residual stream in float32. The modulation and the gated residual adds are each one
        fused multiply-add computed in float32 (the branch outputs are promoted inside the kernel, not copied).
        """
        dtype = context_text.dtype
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = (
            self.modulation.float() + time_mod
        ).chunk(6, dim=1)  # each [B, 1, dim]

        h = modulate(_normed_like(self.norm1, x), shift_sa, scale_sa, dtype)
        x = torch.addcmul(x, self.self_attn(h, rope), gate_sa)

        h = _normed_like(self.norm3, x).to(dtype)
        x = x + self.cross_attn(h, context_img, context_text)

        h = modulate(_normed_like(self.norm2, x), shift_ff, scale_ff, dtype)
        return torch.addcmul(x, self.ffn(h), gate_ff)


def _normed_like(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm in float32, rounded to x's dtype (as the official block does), returned as float32."""
    return layer_norm_float32(norm, x).to(x.dtype).float()


def modulate(normed: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """normed * (1 + scale) + shift computed in float32 and written once in `dtype` (the next Linear's input).

    normed [B, L, dim] float32, shift and scale [B, 1, dim] float32. Without autograd this is one kernel; the
    official computes the same float32 values and casts them at the Linear.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (normed, shift, scale)):
        return torch.addcmul(shift, normed, 1 + scale).to(dtype)  # out= cannot record gradients
    out = torch.empty(normed.shape, dtype=dtype, device=normed.device)
    return torch.addcmul(shift, normed, 1 + scale, out=out)


class OutputHead(nn.Module):
    """Modulated LayerNorm + Linear to patch pixels, all in float32."""

    def __init__(self, dim: int, out_features: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_features)
        self.modulation = nn.Parameter(torch.zeros(1, 2, dim))

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        """x [B, L, dim], time_emb [B, dim] float32 -> [B, L, out_features] float32."""
        shift, scale = (self.modulation.float() + time_emb.unsqueeze(1)).chunk(2, dim=1)
        return float32_linear(self.head, layer_norm_float32(self.norm, x) * (1 + scale) + shift)


class ImageProjection(nn.Module):
    """CLIP features -> context tokens: LayerNorm, Linear, GELU, Linear, LayerNorm (official `img_emb.proj`)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim)
        )

    def forward(self, clip_fea: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """clip_fea [B, N, in_dim] -> [B, N, out_dim] in `dtype` (norms in float32, Linears in `dtype`)."""
        norm_in, fc1, act, fc2, norm_out = self.proj
        h = fc2(act(fc1(layer_norm_float32(norm_in, clip_fea).to(dtype))))
        return layer_norm_float32(norm_out, h).to(dtype)
