"""3-D RoPE tables: the values of the reference formula, built once per grid and device and reused by every forward."""
from __future__ import annotations

import torch

from tests.helpers_dit import build_tiny_dit, run_dit, tiny_inputs
from wan_animate.model import rope


def _reference_cos_sin(head_dim: int, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Angle of token (f, r, c), channel pair i: position * theta^(-2j / axis_dim) on the axis owning pair i."""
    axis_dims = rope.rope_axis_dims(head_dim)
    frames, rows, cols = grid
    rows_out = []
    for f in range(frames):
        for r in range(rows):
            for c in range(cols):
                row = []
                for position, axis_dim in zip((f, r, c), axis_dims):
                    row += [position * rope.ROPE_THETA ** (-2 * j / axis_dim) for j in range(axis_dim // 2)]
                rows_out.append(row)
    angles = torch.tensor(rows_out, dtype=torch.float64)[:, None, :]
    return angles.cos().float(), angles.sin().float()


def test_tables_match_the_reference_formula():
    cos, sin = rope.rope_cos_sin(16, (2, 3, 4))
    ref_cos, ref_sin = _reference_cos_sin(16, (2, 3, 4))
    assert cos.shape == (24, 1, 8) and cos.dtype == torch.float32
    torch.testing.assert_close(cos, ref_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, ref_sin, rtol=0, atol=1e-6)


def test_tables_are_built_once_per_grid_and_device():
    first = rope.rope_cos_sin(16, (2, 3, 5), "cpu")
    again = rope.rope_cos_sin(16, (2, 3, 5), torch.device("cpu"))
    assert again[0] is first[0] and again[1] is first[1]
    other = rope.rope_cos_sin(16, (2, 3, 6))
    assert other[0] is not first[0] and other[0].shape[0] == 36


def test_forwards_and_guidance_passes_do_not_rebuild_the_tables(monkeypatch):
    model = build_tiny_dit(seed=0)
    inputs = tiny_inputs(frames=3, height=4, width=10)  # a grid no other test uses: (3, 2, 5)
    builds = []
    original = rope.rope_angles
    monkeypatch.setattr(rope, "rope_angles", lambda *a, **k: builds.append(a) or original(*a, **k))
    first = run_dit(model, inputs)
    for _ in range(3):
        assert torch.equal(run_dit(model, inputs), first)
    assert len(builds) == 1
