"""Attention against an explicit softmax reference, windowed and not, RoPE and ALiBi, every path."""
import pytest
import torch

import models.attention as attention
from models.attention import (Attention, alibi_slopes, apply_rope, attention_mask, local_attention,
                              reference_attention, rope_cache, softcap_attention, window_sdpa)


@pytest.mark.parametrize("position", ["rope", "alibi", "none"])
@pytest.mark.parametrize("window", [None, 5, 40])
@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("blocked", ["auto", True, False])
def test_attention_equals_explicit_softmax(position, window, softcap, blocked):
    att = Attention(16, 40, num_heads=4, position=position, window=window, softcap=softcap, blocked=blocked).double()
    x = torch.randn(2, 33, 16, dtype=torch.float64)
    y = att(x)
    q, k, v = att._qkv(x)
    bias = att._alibi_bias(33, x.dtype, x.device)
    ref = reference_attention(q, k, v, window, softcap, bias)
    ref = att.out(ref.transpose(1, 2).reshape(2, 33, 16))
    assert torch.allclose(y, ref, atol=1e-10)
    assert att.uses_blocked(33) == bool(window and blocked is True)  # auto: 33 is too short to pay
    assert att.backend == ("attention=local" if att.uses_blocked(33) else
                           "attention=math" if softcap else "attention=sdpa")


def _qkv(B, H, L, D, dtype=torch.float64, scale=1.0):
    return [(scale * torch.randn(B, H, L, D, dtype=dtype)).requires_grad_() for _ in range(3)]


def _bias(slopes, L, dtype):
    pos = torch.arange(L, dtype=dtype)
    return slopes.to(dtype)[:, None, None] * (pos[None, :] - pos[:, None])[None]


def _max_diffs(fast, ref, inputs):
    """Largest absolute difference of the outputs and of the gradients of the same loss."""
    g = torch.autograd.grad((fast * fast).sum(), inputs)
    gr = torch.autograd.grad((ref * ref).sum(), inputs)
    return (fast - ref).abs().max().item(), max((a - b).abs().max().item() for a, b in zip(g, gr))


@pytest.mark.parametrize("L", [1, 7, 8, 9, 31, 64])
@pytest.mark.parametrize("window", [1, 3, 8, 100])
@pytest.mark.parametrize("block", [None, 1, 5])
def test_local_attention_equals_reference(L, window, block):
    """The sliding-window paths are the windowed softmax, at lengths that are and are not multiples
    of the window and of the query block, window >= L, batch 2, with the softcap and ALiBi, and
    their gradients agree too (float64)."""
    q, k, v = _qkv(2, 3, L, 4)
    slopes = alibi_slopes(3)
    for cap, sl in ((None, None), (None, slopes), (2.0, None), (2.0, slopes)):
        out = local_attention(q, k, v, window, cap, sl, block)
        ref = reference_attention(q, k, v, window, cap, None if sl is None else _bias(sl, L, q.dtype))
        dy, dg = _max_diffs(out, ref, (q, k, v))
        assert dy < 1e-12 and dg < 1e-10, (cap, sl is not None, dy, dg)


@pytest.mark.parametrize("cap", [None, 50.0])
@pytest.mark.parametrize("alibi", [False, True])
def test_local_attention_float32_and_default_blocks(cap, alibi):
    """The module's defaults (query blocks of SDPA_BLOCK / SOFTCAP_BLOCK: several blocks, a last
    partial one) in float32: outputs and gradients within 1e-5 of the reference in float32."""
    torch.manual_seed(0)
    L, window = 300, 37
    q, k, v = _qkv(2, 4, L, 16, torch.float32)
    sl = alibi_slopes(4) if alibi else None
    out = local_attention(q, k, v, window, cap, sl)
    ref = reference_attention(q, k, v, window, cap, None if sl is None else _bias(sl, L, q.dtype))
    dy, dg = _max_diffs(out, ref, (q, k, v))
    assert dy < 1e-5 and dg < 1e-5, (dy, dg)


@pytest.mark.parametrize("save", [True, False])
@pytest.mark.parametrize("tanh", ["expm1", "torch"])
@pytest.mark.parametrize("window", [None, 6, 23])
def test_softcap_attention_variants(monkeypatch, save, tanh, window):
    """Both backward forms (tanh tiles kept / recomputed), both tanh forms (expm1 / torch.tanh, the
    latter for dtypes other than float32/64), a window or full causal (window None), ALiBi, with
    scores large enough for the cap to bind."""
    monkeypatch.setattr(attention, "SAVE_TANH_BYTES", 2**40 if save else 0)
    if tanh == "torch":
        monkeypatch.setattr(attention, "_TANH_CLAMP", {})
    q, k, v = _qkv(2, 3, 50, 8, scale=4.0)
    slopes = alibi_slopes(3)
    for sl in (None, slopes):
        out = softcap_attention(q, k, v, window, 5.0, sl, block=16)
        ref = reference_attention(q, k, v, window, 5.0, None if sl is None else _bias(sl, 50, q.dtype))
        dy, dg = _max_diffs(out, ref, (q, k, v))
        assert dy < 1e-12 and dg < 1e-10, (dy, dg)


def test_softcap_attention_without_grad():
    """Under no_grad (or inputs without requires_grad) nothing is kept for a backward; same values."""
    q, k, v = (torch.randn(2, 3, 40, 8, dtype=torch.float64) for _ in range(3))
    ref = reference_attention(q, k, v, 9, 5.0)
    assert torch.allclose(softcap_attention(q, k, v, 9, 5.0, block=16), ref, atol=1e-12)
    q.requires_grad_()
    with torch.no_grad():
        assert torch.allclose(softcap_attention(q, k, v, 9, 5.0, block=16), ref, atol=1e-12)


def test_window_sdpa_is_the_windowed_softmax():
    q, k, v = _qkv(1, 2, 70, 4)
    for window, block in ((10, 4), (10, 10), (10, None), (69, 3), (70, None)):
        out = window_sdpa(q, k, v, window, block=block)
        dy, dg = _max_diffs(out, reference_attention(q, k, v, window), (q, k, v))
        assert dy < 1e-12 and dg < 1e-10


@pytest.mark.parametrize("cap", [None, 50.0])
def test_local_attention_under_autocast(cap):
    """Under CPU autocast (bfloat16) the paths compute in bfloat16, as SDPA does, and stay close."""
    torch.manual_seed(0)
    q, k, v = _qkv(1, 2, 40, 8, torch.float32)
    ref = reference_attention(q, k, v, 9, cap, _bias(alibi_slopes(2), 40, torch.float32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = local_attention(q, k, v, 9, cap, alibi_slopes(2))
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05
    out.float().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_auto_takes_the_window_path_where_it_pays():
    """blocked=auto (Attention.uses_blocked): the Flash STU mixer (window L/8, softcap 50) takes the
    sliding-window path at every L >= 64 with the softcap and L >= 256 without; wide windows and
    windows >= L without the softcap keep SDPA with a mask; blocked=true/false force either."""
    for L in (64, 256, 2048, 8192):
        assert Attention(256, L, window=0.125, softcap=50.0).uses_blocked(L)
    for L in (256, 2048, 8192):
        assert Attention(256, L, window=0.125).uses_blocked(L)
    assert not Attention(256, 128, window=0.125).uses_blocked(128)
    assert not Attention(256, 1024, window=0.9).uses_blocked(1024)
    assert not Attention(256, 1024, window=1024, softcap=50.0).uses_blocked(1024)
    assert not Attention(256, 1024, window=0.125, softcap=50.0).uses_blocked(32)
    assert Attention(256, 1024, window=1024, blocked=True).uses_blocked(1024)
    assert not Attention(256, 1024, window=0.125, blocked=False).uses_blocked(1024)
    assert not Attention(256, 1024, softcap=50.0).uses_blocked(1024)


def test_attention_module_window_path_gradients():
    """Through the module at a length where auto takes the window path: outputs and parameter
    gradients equal the explicit formula's (RoPE, softcap and not)."""
    torch.manual_seed(0)
    for cap in (None, 50.0):
        att = Attention(16, 256, num_heads=2, window=0.125, softcap=cap).double()
        x = torch.randn(1, 256, 16, dtype=torch.float64)
        y = att(x)
        assert att.backend == "attention=local"
        g = torch.autograd.grad(y.square().sum(), list(att.parameters()))
        q, k, v = att._qkv(x)
        ref = att.out(reference_attention(q, k, v, 32, cap).transpose(1, 2).reshape(1, 256, 16))
        gr = torch.autograd.grad(ref.square().sum(), list(att.parameters()))
        assert torch.allclose(y, ref, atol=1e-10)
        assert all(torch.allclose(a, b, atol=1e-9) for a, b in zip(g, gr))


def test_reference_attention_is_the_textbook_formula():
    q, k, v = (torch.randn(1, 1, 6, 4, dtype=torch.float64) for _ in range(3))
    out = reference_attention(q, k, v, window=3)
    for i in range(6):
        js = [j for j in range(6) if j <= i and i - j < 3]
        s = torch.stack([(q[0, 0, i] * k[0, 0, j]).sum() / 2.0 for j in js])
        w = torch.softmax(s, 0)
        assert torch.allclose(out[0, 0, i], sum(w[n] * v[0, 0, j] for n, j in enumerate(js)))


def test_window_mask_and_fraction():
    m = attention_mask(6, 2, "cpu")
    assert m.sum(1).tolist() == [1, 2, 2, 2, 2, 2]
    att = Attention(16, 128, window=0.125)
    assert att.window == 16


def test_rope_is_relative():
    """RoPE scores depend on positions only through their difference."""
    cos, sin = rope_cache(20, 8, 10000.0, torch.float64, "cpu")
    q = torch.randn(8, dtype=torch.float64)
    k = torch.randn(8, dtype=torch.float64)
    Q = apply_rope(q.expand(1, 1, 20, 8), cos, sin)[0, 0]
    K = apply_rope(k.expand(1, 1, 20, 8), cos, sin)[0, 0]
    assert torch.allclose(Q[5] @ K[2], Q[15] @ K[12])


def test_narrow_width_gets_fewer_heads():
    att = Attention(8, 32, num_heads=8, position="rope")
    assert att.num_heads == 4 and att.head_dim == 2


def test_position_interpolation_scales_alibi_slopes_and_rope_positions():
    """Section IV's position interpolation (factor 0.25): ALiBi slopes x 0.25 (the authors' LM code),
    RoPE angles of position t those of t x 0.25 (Chen et al.); factor 1 is the plain model."""
    from models.attention import Attention, alibi_slopes, rope_cache

    a = Attention(32, 64, num_heads=4, position="alibi", interpolation_factor=0.25)
    assert torch.allclose(a.slopes, alibi_slopes(4).float() * 0.25)
    cos, sin = rope_cache(64, 8, 10000.0, torch.float64, "cpu", 0.25)  # position 4k -> the angles of k
    cos1, sin1 = rope_cache(16, 8, 10000.0, torch.float64, "cpu")
    assert torch.allclose(cos[::4], cos1) and torch.allclose(sin[::4], sin1)
    torch.manual_seed(0)
    r1 = Attention(32, 64, num_heads=4, position="rope").double()
    r2 = Attention(32, 64, num_heads=4, position="rope", interpolation_factor=0.25).double()
    r2.load_state_dict(r1.state_dict())
    x = torch.randn(2, 64, 32, dtype=torch.float64)
    assert not torch.allclose(r1(x), r2(x))
    with pytest.raises(ValueError, match="interpolation_factor"):
        Attention(32, 64, interpolation_factor=0)
