"""Attention against an explicit softmax reference, windowed and not, RoPE and ALiBi."""
import pytest
import torch

from models.attention import Attention, apply_rope, attention_mask, reference_attention, rope_cache


@pytest.mark.parametrize("position", ["rope", "alibi", "none"])
@pytest.mark.parametrize("window", [None, 5])
@pytest.mark.parametrize("softcap", [None, 2.0])
def test_attention_equals_explicit_softmax(position, window, softcap):
    att = Attention(16, 40, num_heads=4, position=position, window=window, softcap=softcap).double()
    x = torch.randn(2, 33, 16, dtype=torch.float64)
    y = att(x)
    q, k, v = att._qkv(x)
    bias = att._alibi_bias(33, x.dtype, x.device)
    ref = reference_attention(q, k, v, window, softcap, bias)
    ref = att.out(ref.transpose(1, 2).reshape(2, 33, 16))
    assert torch.allclose(y, ref, atol=1e-10)


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
