"""Spatial tiling of the VAE: tile layout, exact blending, exact per-tile causality, agreement with untiled coding."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from helpers_vae import TINY, random_vae, random_video
from wan_animate.model.vae_tiling import blend_weights, fitted_tile, map_tiles, tile_starts

TILE, OVERLAP = 6, 2  # latent cells: on the 8x12-cell test video this makes 2 x 3 tiles


@pytest.fixture(scope="module")
def vae():
    return random_vae(TINY, seed=7)


@pytest.fixture(scope="module")
def video():
    return random_video(5, 64, 96, seed=8)


@pytest.mark.parametrize(("size", "tile", "overlap"), [(8, 6, 2), (12, 6, 2), (90, 64, 8), (160, 64, 8), (5, 6, 2),
                                                        (37, 10, 0), (100, 33, 7)])
def test_tile_layout_covers_with_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and min(starts[-1] + tile, size) == size
    for a, b in itertools.pairwise(starts):
        assert a + tile - b >= overlap, (starts, "overlap too small")
    # no tile could be dropped: one fewer tile of this size cannot cover the axis with this overlap
    assert len(starts) == 1 or (len(starts) - 1) * (tile - overlap) + overlap < size
    total = torch.zeros(size * 8)
    for start, weight in zip(starts, blend_weights(starts, tile, size, 8)):
        total[start * 8:start * 8 + len(weight)] += weight
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


def test_tile_must_exceed_overlap():
    with pytest.raises(ValueError, match="tile size 4 must be larger than the overlap 4"):
        tile_starts(10, 4, 4)


def test_blending_reproduces_a_pointwise_map_exactly(video):
    """For maps without spatial context, tiling + blending is exact: the blend weights are a partition of unity."""
    def pool(x: torch.Tensor) -> torch.Tensor:  # pixels -> cells, like encode
        return F.avg_pool3d(x, (1, 8, 8))

    def grow(x: torch.Tensor) -> torch.Tensor:  # cells -> pixels, like decode
        return x.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4)

    grid = (video.shape[3] // 8, video.shape[4] // 8)
    tiled = map_tiles(pool, video, grid, 8, 1, (TILE, TILE), OVERLAP)
    assert torch.allclose(tiled, pool(video), atol=1e-6)
    cells = pool(video)
    tiled = map_tiles(grow, cells, grid, 1, 8, (TILE, 4), OVERLAP)
    assert torch.allclose(tiled, grow(cells), atol=1e-6)


def test_one_tile_is_identical_to_untiled(vae):
    video = random_video(5, 32, 48, seed=10)
    latent = vae.encode(video)
    assert torch.equal(vae.encode(video, tiled=True, tile=(4, 6), overlap=2), latent)
    assert torch.equal(vae.decode(latent, tiled=True, tile=64), vae.decode(latent))


def test_tiled_coding_is_exactly_causal_per_tile(vae):
    """Each tile runs its own temporal pass, so tiled coding keeps the causal structure exactly."""
    long_video = random_video(9, 32, 48, seed=9)
    tiling = {"tiled": True, "tile": 3, "overlap": 1}  # 2 x 3 tiles on 4 x 6 cells
    latent = vae.encode(long_video, **tiling)
    short = vae.encode(long_video[:, :, :5], **tiling)
    assert (short - latent[:, :, :2]).abs().max().item() < 1e-6
    recon = vae.decode(latent, **tiling)
    short_recon = vae.decode(latent[:, :, :2], **tiling)
    assert (short_recon - recon[:, :, :5]).abs().max().item() < 1e-6


def test_tiled_agrees_with_untiled(vae, video):
    """Tiles see zero padding where the untiled pass sees neighbours; the linear blend hides part of it.

    A random-weight VAE has no locality (its receptive field covers the whole 64x96 frame, unlike a trained one),
    so this is a loose bound; the blending itself is checked exactly above. Measured here (2 x 3 tiles of 6 cells,
    overlap 2): encode mean |diff| 0.011 (3% of the latent's std 0.37), max 0.13; decode mean 0.049 (18% of the
    video's std 0.28), max 0.59. Bounds: about 2x the measurement.
    """
    latent = vae.encode(video)
    tiled_latent = vae.encode(video, tiled=True, tile=TILE, overlap=OVERLAP)
    assert tiled_latent.shape == latent.shape
    diff = (tiled_latent - latent).abs()
    assert diff.mean() < 0.06 * latent.std() and diff.max() < 0.3
    assert diff.max() > 1e-3  # tiling really happened

    recon = vae.decode(latent)
    tiled_recon = vae.decode(latent, tiled=True, tile=TILE, overlap=OVERLAP)
    assert tiled_recon.shape == recon.shape and tiled_recon.abs().max() <= 1.0
    diff = (tiled_recon - recon).abs()
    assert diff.mean() < 0.35 * recon.std() and diff.max() < 1.2
    assert diff.max() > 1e-3


@pytest.mark.parametrize("size, tile, overlap, fitted", [(104, 64, 8, 56), (160, 64, 8, 59), (20, 16, 4, 12),
                                                          (60, 64, 8, 64), (135, 64, 8, 51)])
def test_fitted_tile_keeps_count_and_overlap_with_fewer_cells(size, tile, overlap, fitted):
    assert fitted_tile(size, tile, overlap) == fitted
    starts = tile_starts(size, fitted, overlap)
    assert len(starts) == len(tile_starts(size, tile, overlap))
    assert starts[0] == 0 and starts[-1] + min(fitted, size) == size
    assert all(b - a <= fitted - overlap for a, b in zip(starts, starts[1:]))  # neighbours share >= overlap cells
