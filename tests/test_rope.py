"""3-D RoPE tables: the values of the reference formula, built once per grid and device and reused by every forward."""
from __future__ import annotations

import pytest
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
    cos, sin, rotation = rope.rope_tables(16, (2, 3, 4))
    ref_cos, ref_sin = _reference_cos_sin(16, (2, 3, 4))
    assert cos.shape == (24, 1, 8) and cos.dtype == torch.float32
    torch.testing.assert_close(cos, ref_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(sin, ref_sin, rtol=0, atol=1e-6)
    assert rotation.dtype == torch.complex64
    assert torch.equal(rotation.real, cos) and torch.equal(rotation.imag, sin)


def test_tables_are_built_once_per_grid_and_device():
    first = rope.rope_tables(16, (2, 3, 5), "cpu")
    again = rope.rope_tables(16, (2, 3, 5), torch.device("cpu"))
    assert all(a is b for a, b in zip(again, first))
    other = rope.rope_tables(16, (2, 3, 6))
    assert other.cos is not first.cos and other.cos.shape[0] == 36


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_eager_and_compiled_rotations_equal_the_float64_rotation(dtype):
    """The eager complex multiply and the real arithmetic a compiled graph runs rotate pairs (2i, 2i+1) alike."""
    tables = rope.rope_tables(16, (2, 3, 4))
    x = torch.randn(1, 24, 2, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
    pairs = x.double().unflatten(-1, (-1, 2))
    ref_cos, ref_sin = (t.double() for t in _reference_cos_sin(16, (2, 3, 4)))
    real, imag = pairs[..., 0], pairs[..., 1]
    expected = torch.stack((real * ref_cos - imag * ref_sin, real * ref_sin + imag * ref_cos), -1).flatten(-2)
    eager = rope.apply_rope(x, tables)
    compiled = torch.compile(rope.apply_rope, backend="eager", fullgraph=True)(x, tables)
    torch._dynamo.reset()
    rtol = 1e-6 if dtype == torch.float32 else 2 ** -8  # float32 maths; bf16 adds one rounding of the result
    assert eager.dtype == compiled.dtype == dtype
    torch.testing.assert_close(eager.double(), expected, rtol=rtol, atol=1e-6)
    torch.testing.assert_close(compiled.double(), expected, rtol=rtol, atol=1e-6)


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
