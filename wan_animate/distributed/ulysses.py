"""Ulysses attention: all-to-all from a token shard of every head to every token of a share of the heads and back.

Before self-attention each rank holds q, k, v for its `chunk` tokens and all H heads; one all-to-all per tensor
scatters the heads and gathers the sequence, so that each rank attends over the whole sequence for H / world heads;
the output goes back with the inverse all-to-all (4 all-to-alls per block, each moving chunk * dim values per rank).
Heads are zero-padded to a multiple of the world size (a zero head attends to zeros and is dropped), and the
sequence's padding tokens are dropped before attention so that they never act as keys.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..runtime.attention import attention


def scatter_heads_gather_tokens(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """[B, chunk, H, D] on every rank (H divisible by world) -> [B, world * chunk, H / world, D]."""
    world = dist.get_world_size(group)
    batch, chunk, heads, dim = x.shape
    send = x.reshape(batch, chunk, world, heads // world, dim).permute(2, 0, 1, 3, 4).contiguous()  # [W, B, c, h, D]
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)  # [W (source rank), B, c, h, D]
    return received.permute(1, 0, 2, 3, 4).reshape(batch, world * chunk, heads // world, dim)


def scatter_tokens_gather_heads(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """The inverse: [B, world * chunk, h, D] -> [B, chunk, world * h, D]."""
    world = dist.get_world_size(group)
    batch, tokens, heads, dim = x.shape
    chunk = tokens // world
    send = x.reshape(batch, world, chunk, heads, dim).transpose(0, 1).contiguous()  # [W, B, c, h, D]
    received = torch.empty_like(send)
    dist.all_to_all_single(received, send, group=group)  # [W (source head group), B, c, h, D]
    return received.permute(1, 2, 0, 3, 4).reshape(batch, chunk, world * heads, dim)


class UlyssesAttention:
    """A drop-in `attend(q, k, v)` for one rank's tokens: [B, chunk, H, D] each -> [B, chunk, H, D].

    `tokens` is the real length of the whole sequence (the rest of world * chunk is padding).
    """

    def __init__(self, group: dist.ProcessGroup | None, tokens: int):
        self.group = group
        self.tokens = tokens

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size(self.group)
        heads = q.shape[2]
        extra = math.ceil(heads / world) * world - heads
        q, k, v = (F.pad(t, (0, 0, 0, extra)) if extra else t for t in (q, k, v))
        q, k, v = (scatter_heads_gather_tokens(t, self.group) for t in (q, k, v))  # [B, W * chunk, H' / W, D]
        padded = q.shape[1]
        out = attention(q[:, : self.tokens], k[:, : self.tokens], v[:, : self.tokens])
        if padded > self.tokens:
            out = F.pad(out, (0, 0, 0, 0, 0, padded - self.tokens))
        return scatter_tokens_gather_heads(out, self.group)[:, :, :heads]
