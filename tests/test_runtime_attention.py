"""Attention dispatch: SDPA maths, backend selection, SageAttention routing and its logged fallback."""
import logging
import math
import sys
import types

import pytest
import torch

from wan_animate.runtime import attention as attn


def manual_attention(q, k, v):
    # [B, L, H, D] -> scores [B, H, Lq, Lk]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)


@pytest.fixture(autouse=True)
def clean_state():
    attn.load_sageattn.cache_clear()
    attn.load_flash_attn.cache_clear()
    attn._reported_fallbacks.clear()
    yield
    attn.set_attention_backend("sdpa")
    attn.load_sageattn.cache_clear()
    attn.load_flash_attn.cache_clear()
    attn._reported_fallbacks.clear()


def qkv(lq=7, lk=11, heads=3, dim=16, batch=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(batch, lq, heads, dim, generator=g, dtype=dtype)
    k = torch.randn(batch, lk, heads, dim, generator=g, dtype=dtype)
    v = torch.randn(batch, lk, heads, dim, generator=g, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize("backend", ["sdpa", "auto", "sage", "flash"])
def test_attention_matches_manual_softmax(backend, monkeypatch):
    monkeypatch.setitem(sys.modules, "sageattention", None)  # absent: sage/flash/auto fall back to SDPA
    monkeypatch.setitem(sys.modules, "flash_attn", None)
    q, k, v = qkv()
    out = attn.attention(q, k, v, backend=backend)
    assert out.shape == q.shape
    torch.testing.assert_close(out, manual_attention(q, k, v), rtol=1e-10, atol=1e-10)


def test_frame_confined_attention_shape_goes_through_dispatch():
    # face adapter: each latent frame's tokens (batch of frames) attend to that frame's 5 motion tokens
    q, k, v = qkv(lq=12, lk=5, heads=2, dim=8, batch=4)
    out = attn.attention(q, k, v)
    torch.testing.assert_close(out, manual_attention(q, k, v), rtol=1e-10, atol=1e-10)


def test_backend_setter_and_scope():
    assert attn.get_attention_backend() == "sdpa"
    with attn.attention_backend("auto"):
        assert attn.get_attention_backend() == "auto"
    assert attn.get_attention_backend() == "sdpa"
    with pytest.raises(ValueError, match="'xformers'.*expected one of"):
        attn.set_attention_backend("xformers")
    with pytest.raises(ValueError, match=r"\[B, L, heads, head_dim\]"):
        attn.attention(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))


def test_sage_requested_but_absent_logs_and_falls_back(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "sageattention", None)  # makes `import sageattention` raise ImportError
    attn.set_attention_backend("sage")
    q, k, v = qkv()
    with caplog.at_level(logging.INFO, logger=attn.__name__):
        out = attn.attention(q, k, v)
        attn.attention(q, k, v)
    torch.testing.assert_close(out, manual_attention(q, k, v), rtol=1e-10, atol=1e-10)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per reason, not once per call
    assert "not installed" in warnings[0].getMessage() and "SDPA" in warnings[0].getMessage()


def test_sage_installed_but_cpu_tensors_fall_back(monkeypatch, caplog):
    calls = []
    fake = types.ModuleType("sageattention")
    fake.sageattn = lambda *a, **kw: calls.append(kw)
    monkeypatch.setitem(sys.modules, "sageattention", fake)
    q, k, v = qkv()
    with caplog.at_level(logging.INFO, logger=attn.__name__):
        attn.attention(q, k, v, backend="auto")
    assert calls == []
    assert any("needs CUDA" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_sage_is_called_with_nhd_layout_when_supported(monkeypatch):
    calls = []

    def fake_sageattn(q, k, v, tensor_layout, is_causal):
        calls.append((tensor_layout, is_causal, q.shape, k.shape))
        return manual_attention(q, k, v)

    monkeypatch.setattr(attn, "load_sageattn", lambda: fake_sageattn)
    monkeypatch.setattr(attn, "sage_problem", lambda *properties, sage_installed: None)
    q, k, v = qkv()
    out = attn.attention(q, k, v, backend="sage")
    assert calls == [("NHD", False, q.shape, k.shape)]
    torch.testing.assert_close(out, manual_attention(q, k, v))


@pytest.mark.parametrize(
    "capability, dtype, head_dim, expected",
    [
        ((9, 0), torch.bfloat16, 128, None),
        ((8, 6), torch.float16, 64, None),
        ((7, 5), torch.float16, 128, "capability 7.5"),
        ((9, 0), torch.float32, 128, "float16 or all bfloat16"),
        ((9, 0), torch.bfloat16, 80, "head_dim 80"),
    ],
)
def test_sage_support_rules(capability, dtype, head_dim, expected):
    problem = attn.sage_support_problem(capability, dtype, head_dim, dtype, dtype)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem


def test_sage_rejects_mixed_dtypes():
    assert "dtypes" in attn.sage_support_problem((9, 0), torch.bfloat16, 128, torch.float16, torch.bfloat16)


def test_flash_requested_but_absent_warns_and_falls_back(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "flash_attn", None)
    q, k, v = qkv()
    with caplog.at_level(logging.WARNING, logger=attn.__name__):
        out = attn.attention(q, k, v, backend="flash")
        attn.attention(q, k, v, backend="flash")
    torch.testing.assert_close(out, manual_attention(q, k, v), rtol=1e-10, atol=1e-10)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "flash_attn is not installed" in warnings[0].getMessage()


def test_flash_is_called_in_blhd_layout_and_auto_prefers_sage_then_flash(monkeypatch):
    calls = []

    def fake_flash(q, k, v):
        calls.append("flash")
        return manual_attention(q, k, v)

    monkeypatch.setattr(attn, "load_flash_attn", lambda: fake_flash)
    monkeypatch.setattr(attn, "flash_problem", lambda *properties, flash_installed: None)
    monkeypatch.setitem(sys.modules, "sageattention", None)
    q, k, v = qkv()
    torch.testing.assert_close(attn.attention(q, k, v, backend="flash"), manual_attention(q, k, v))
    attn.attention(q, k, v, backend="auto")  # sage absent: flash
    assert calls == ["flash", "flash"]
    monkeypatch.setattr(attn, "load_sageattn", lambda: lambda q, k, v, **kw: calls.append("sage") or q)
    monkeypatch.setattr(attn, "sage_problem", lambda *properties, sage_installed: None)
    attn.attention(q, k, v, backend="auto")
    assert calls[-1] == "sage"


def test_flash_support_rules():
    properties = (torch.device("cpu"), torch.bfloat16, 128, torch.bfloat16, torch.bfloat16)
    assert "not installed" in attn.flash_problem(*properties, flash_installed=False)
    assert "needs CUDA" in attn.flash_problem(*properties, flash_installed=True)
    cuda = torch.device("cuda")
    assert "multiple of 8" in attn.flash_problem(cuda, torch.bfloat16, 100, torch.bfloat16, torch.bfloat16, True)
    assert "dtypes" in attn.flash_problem(cuda, torch.float32, 128, torch.float32, torch.float32, True)
    assert attn.flash_problem(cuda, torch.bfloat16, 128, torch.bfloat16, torch.bfloat16, True) is None


@pytest.mark.parametrize("capability,expected",
                         [((8, 6), "sage"), ((8, 9), "sage"), ((9, 0), "sdpa"), ((10, 0), "sdpa")])
def test_auto_keeps_sdpa_from_hopper_on_and_tries_sage_before(monkeypatch, caplog, capability, expected):
    """SageAttention 1.0.6 was measured slower than SDPA on an H200, so "auto" does not pick it there."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(attn, "load_sageattn", lambda: lambda q, k, v, **kw: q)
    monkeypatch.setattr(attn, "load_flash_attn", lambda: lambda q, k, v: q)
    cuda = torch.device("cuda")
    with caplog.at_level(logging.INFO, logger=attn.__name__):
        kernel = attn._kernel_for("auto", cuda, torch.bfloat16, 128, torch.bfloat16, torch.bfloat16)
        explicit = attn._kernel_for("sage", cuda, torch.bfloat16, 128, torch.bfloat16, torch.bfloat16)
    assert kernel == expected and explicit == "sage"  # an explicit choice is always honoured
    measured = [r for r in caplog.records if "measured fastest" in r.getMessage()]
    assert len(measured) == (expected == "sdpa") and all(r.levelno == logging.INFO for r in measured)
