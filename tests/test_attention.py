"""Attention against an explicit softmax reference, windowed and not, RoPE and ALiBi."""
import pytest
import torch

from models.attention import (Attention, alibi_slopes, apply_rope, attention_mask, local_attention,
                              reference_attention, rope_cache)


@pytest.mark.parametrize("position", ["rope", "alibi", "none"])
@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("blocked", ["auto", False])
def test_attention_equals_explicit_softmax(position, window, softcap, blocked):
    att = Attention(16, 40, num_heads=4, position=position, window=window, softcap=softcap, blocked=blocked).double()
    x = torch.randn(2, 33, 16, dtype=torch.float64)
    y = att(x)
    q, k, v = att._qkv(x)
    bias = att._alibi_bias(33, x.dtype, x.device)
    ref = reference_attention(q, k, v, window, softcap, bias)
    ref = att.out(ref.transpose(1, 2).reshape(2, 33, 16))
    assert torch.allclose(y, ref, atol=1e-10)
    assert att.backend == ("attention=local" if window and blocked == "auto" else
                           "attention=math" if softcap else "attention=sdpa")


@pytest.mark.parametrize("L", [1, 7, 8, 9, 31, 64])
@pytest.mark.parametrize("window", [1, 3, 8])
def test_local_attention_equals_reference(L, window):
    """Block-by-block sliding-window attention is the windowed softmax, at lengths that are and are
    not multiples of the window, with the softcap and ALiBi bias, and its gradients agree too."""
    q, k, v = (torch.randn(2, 3, L, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    slopes = alibi_slopes(3)
    pos = torch.arange(L, dtype=torch.float64)
    bias = slopes[:, None, None] * (pos[None, :] - pos[:, None])[None]
    for cap, sl, b in ((None, None, None), (2.0, slopes, bias)):
        out = local_attention(q, k, v, window, cap, sl)
        ref = reference_attention(q, k, v, window, cap, b)
        assert torch.allclose(out, ref, atol=1e-12)
        g = torch.autograd.grad(out.square().sum(), (q, k, v))
        gr = torch.autograd.grad(ref.square().sum(), (q, k, v))
        assert all(torch.allclose(a, c, atol=1e-10) for a, c in zip(g, gr))


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
