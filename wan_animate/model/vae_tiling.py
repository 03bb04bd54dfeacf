"""Spatial tiling for the VAE: run a coder on overlapping crops and blend the results with linear ramps.

Tiles are laid out on the latent grid (one cell = 8x8 pixels). Along each axis a tile is shrunk to the smallest size
that needs no more tiles, and the tiles are spread evenly so that neighbours overlap by at least `overlap` cells;
inside an overlap the earlier tile's weight falls linearly while the next one's rises, and the blended output is the
weighted sum divided by the summed weights.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """First cells of the tiles that cover `size` cells with tiles of `tile` cells overlapping by >= `overlap`."""
    if tile <= overlap or overlap < 0:
        raise ValueError(f"tile size {tile} must be larger than the overlap {overlap} (and the overlap >= 0)")
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    return [round(k * (size - tile) / (count - 1)) for k in range(count)]


def fitted_tile(size: int, tile: int, overlap: int) -> int:
    """The smallest tile that covers `size` cells with as many tiles as `tile` needs, overlapping by >= `overlap`.

    Spreading tiles of the requested size evenly can overlap them far more than asked (two 64-cell tiles over 104
    cells share 24), and every shared cell is coded twice; the fitted size (56 there) keeps the tile count and the
    minimum overlap while coding 12% fewer cells.
    """
    count = len(tile_starts(size, tile, overlap))
    if count == 1:
        return tile
    return -(-(size + (count - 1) * overlap) // count)


def blend_weights(starts: list[int], tile: int, size: int, scale: int) -> list[torch.Tensor]:
    """Per-tile weights along one axis, in output units (`scale` output samples per cell); they sum to 1."""
    spans = [(s * scale, min(s + tile, size) * scale) for s in starts]
    weights = []
    for k, (begin, end) in enumerate(spans):
        weight = torch.ones(end - begin)
        if k > 0:
            shared = spans[k - 1][1] - begin
            if shared > 0:
                weight[:shared] = torch.arange(1, shared + 1) / (shared + 1)
        if k + 1 < len(spans):
            shared = end - spans[k + 1][0]
            if shared > 0:
                falling = torch.arange(shared, 0, -1) / (shared + 1)
                weight[-shared:] = torch.minimum(weight[-shared:], falling)
        weights.append(weight)
    return weights


def map_tiles(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    grid: tuple[int, int],
    in_scale: int,
    out_scale: int,
    tile: tuple[int, int],
    overlap: int,
) -> torch.Tensor:
    """Blend `fn` applied to overlapping spatial crops of `x` [B, C, T, H, W].

    `grid` is the latent (h, w); a crop of cells [y0, y1) x [x0, x1) is `x[..., y0*in_scale:y1*in_scale, ...]`, and
    `fn` maps it to a float tensor [B, C', T', (y1-y0)*out_scale, (x1-x0)*out_scale].
    """
    (height, width), (tile_h, tile_w) = grid, tile
    tile_h, tile_w = fitted_tile(height, tile_h, overlap), fitted_tile(width, tile_w, overlap)
    rows, cols = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    row_weights = blend_weights(rows, tile_h, height, out_scale)
    col_weights = blend_weights(cols, tile_w, width, out_scale)
    out = weight_sum = None
    for y0, row_weight in zip(rows, row_weights):
        for x0, col_weight in zip(cols, col_weights):
            y1, x1 = min(y0 + tile_h, height), min(x0 + tile_w, width)
            crop = x[..., y0 * in_scale:y1 * in_scale, x0 * in_scale:x1 * in_scale]
            y = fn(crop)
            if out is None:
                out = y.new_zeros(*y.shape[:3], height * out_scale, width * out_scale)
                weight_sum = y.new_zeros(height * out_scale, width * out_scale)
            weight = torch.outer(row_weight, col_weight).to(device=y.device, dtype=y.dtype)  # [h', w']
            rows_out = slice(y0 * out_scale, y1 * out_scale)
            cols_out = slice(x0 * out_scale, x1 * out_scale)
            out[..., rows_out, cols_out].add_(y * weight)
            weight_sum[rows_out, cols_out].add_(weight)
            del y
    return out.div_(weight_sum)
