"""3-D rotary position embedding of the Wan transformer (frame, row, column axes)."""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch

ROPE_THETA = 10000.0
ROPE_POSITIONS = 1024
ROPE_CACHE_SIZE = 8  # (head_dim, grid, device) tables kept: a few segment sizes times a few devices


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Rotated channels per axis: time gets head_dim - 4 * (head_dim // 6), height and width 2 * (head_dim // 6)."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def rope_angles(head_dim: int, positions: int = ROPE_POSITIONS) -> tuple[torch.Tensor, ...]:
    """Per-axis rotation angles in float64, each [positions, axis_dim // 2]."""
    angles = []
    for axis_dim in rope_axis_dims(head_dim):
        inv_freq = 1.0 / torch.pow(ROPE_THETA, torch.arange(0, axis_dim, 2, dtype=torch.float64) / axis_dim)
        angles.append(torch.outer(torch.arange(positions, dtype=torch.float64), inv_freq))
    return tuple(angles)


class RopeTables(NamedTuple):
    """The rotation of every token, each [L, 1, head_dim // 2]: float32 cos and sin, and cos + i sin as complex64.

    Every field is indexed by token along dim 0, so a sequence shard takes the same rows of each."""

    cos: torch.Tensor
    sin: torch.Tensor
    rotation: torch.Tensor


def rope_tables(head_dim: int, grid: tuple[int, int, int], device: torch.device | str = "cpu") -> RopeTables:
    """The rotation tables of every token of a (frames, rows, cols) grid (see `RopeTables`).

    Tokens are ordered frame-major, then row, then column, as the patch embedding flattens them. The tables are
    built once per (head_dim, grid, device) and shared by every later call (callers must not modify them).
    """
    frames, rows, cols = grid
    if max(grid) > ROPE_POSITIONS:
        raise ValueError(f"token grid {grid} exceeds the {ROPE_POSITIONS} rotary positions per axis")
    return _cached_tables(head_dim, (int(frames), int(rows), int(cols)), torch.device(device))


@functools.lru_cache(maxsize=ROPE_CACHE_SIZE)
def _cached_tables(head_dim: int, grid: tuple[int, int, int], device: torch.device) -> RopeTables:
    frames, rows, cols = grid
    t_ang, h_ang, w_ang = rope_angles(head_dim)
    angles = torch.cat(
        [
            t_ang[:frames, None, None, :].expand(frames, rows, cols, -1),
            h_ang[None, :rows, None, :].expand(frames, rows, cols, -1),
            w_ang[None, None, :cols, :].expand(frames, rows, cols, -1),
        ],
        dim=-1,
    ).reshape(frames * rows * cols, 1, head_dim // 2)
    cos, sin = angles.cos().float().to(device), angles.sin().float().to(device)
    return RopeTables(cos, sin, torch.complex(cos, sin))


def apply_rope(x: torch.Tensor, tables: RopeTables) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of x [B, L, heads, head_dim] in float32; returns x's dtype.

    Eager runs one complex multiply (three passes over x with the casts); a compiled graph gets the same products in
    real arithmetic, which the compiler fuses into one kernel (complex tensors would stay outside its fusion).
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # [B, L, heads, head_dim / 2, 2]
    if torch.compiler.is_compiling():
        real, imag = pairs[..., 0], pairs[..., 1]
        cos, sin = tables.cos, tables.sin
        rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    else:
        rotated = torch.view_as_real(torch.view_as_complex(pairs) * tables.rotation)
    return rotated.flatten(-2).to(x.dtype)
