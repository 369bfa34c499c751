"""Tests for models/mamba2.py (CPU; the mamba_ssm fast path needs CUDA)."""

import pytest
import torch

from models.mamba2 import Mamba2, ssd_chunked, ssd_recurrent_reference

WIDTH, SEQ_LEN = 16, 300


def make(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    opts = dict(d_state=8, headdim=8, chunk_size=16)
    opts.update(kw)
    return Mamba2(WIDTH, SEQ_LEN, **opts).to(dtype)


def random_ssd_inputs(L, b=2, h=4, p=3, g=2, n=5, dtype=torch.float64):
    torch.manual_seed(L)
    x = torch.randn(b, L, h, p, dtype=dtype)
    dt = torch.nn.functional.softplus(torch.randn(b, L, h, dtype=dtype))
    A = -torch.rand(h, dtype=dtype) * 2 - 0.1
    B = torch.randn(b, L, g, n, dtype=dtype)
    C = torch.randn(b, L, g, n, dtype=dtype)
    return x, dt, A, B, C


@pytest.mark.parametrize("L", [1, 7, 16, 37, 64, 100])
@pytest.mark.parametrize("chunk_size", [8, 16])
def test_chunked_ssd_equals_recurrence(L, chunk_size):
    x, dt, A, B, C = random_ssd_inputs(L)
    y = ssd_chunked(x, dt, A, B, C, chunk_size)
    y_ref = ssd_recurrent_reference(x, dt, A, B, C)
    assert y.shape == y_ref.shape == x.shape
    assert torch.allclose(y, y_ref, atol=1e-8, rtol=1e-8)


def test_chunked_ssd_float32_close():
    x, dt, A, B, C = random_ssd_inputs(70, dtype=torch.float32)
    y = ssd_chunked(x, dt, A, B, C, 16)
    y_ref = ssd_recurrent_reference(x.double(), dt.double(), A.double(), B.double(), C.double())
    assert torch.allclose(y.double(), y_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("L", [1, 16, 45, 300])
def test_shape_dtype_finite(dtype, L):
    m = make(dtype)
    y = m(torch.randn(2, L, WIDTH, dtype=dtype))
    assert y.shape == (2, L, WIDTH) and y.dtype == dtype
    assert torch.isfinite(y).all()
    assert m.backend == "ssd=torch"


@pytest.mark.parametrize("L", [5, 16, 50, 97])
def test_causal(L):
    # One batched forward: row 0 is the input, row 1+k has a perturbation at time t_k.
    m = make()
    ts = sorted({0, L // 3, L // 2, L - 1})
    x = torch.randn(1, L, WIDTH, dtype=torch.float64).repeat(1 + len(ts), 1, 1)
    for k, t in enumerate(ts):
        x[1 + k, t] += torch.randn(WIDTH, dtype=torch.float64)
    y = m(x)
    for k, t in enumerate(ts):
        assert torch.allclose(y[1 + k, :t], y[0, :t], atol=1e-10, rtol=0)
        assert not torch.allclose(y[1 + k, t], y[0, t])


def test_block_consistent_across_chunk_sizes():
    x = torch.randn(2, 77, WIDTH, dtype=torch.float64)
    y8, y64 = make(chunk_size=8)(x), make(chunk_size=64)(x)
    assert torch.allclose(y8, y64, atol=1e-10, rtol=1e-10)


def test_gradients_reach_every_parameter():
    m = make(torch.float32)
    m(torch.randn(2, 40, WIDTH)).pow(2).mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_optim_attributes_and_init():
    m = make(dt_min=1e-3, dt_max=1e-1, A_init_range=(1, 16))
    for p in (m.A_log, m.D, m.dt_bias):
        assert p._optim == {"weight_decay": 0.0}
    dt = torch.nn.functional.softplus(m.dt_bias)
    assert (dt >= 1e-3 - 1e-12).all() and (dt <= 1e-1 + 1e-12).all()
    A = m.A_log.exp()
    assert (A >= 1).all() and (A <= 16).all()


@pytest.mark.parametrize("width,expand,headdim,want_hd", [
    (16, 2, 8, 8), (32, 2, 32, 32), (32, 2, 128, 64), (10, 2, 8, 5), (3, 1, 32, 3), (7, 2, 4, 2),
])
def test_headdim_clipping(width, expand, headdim, want_hd):
    m = Mamba2(width, 32, expand=expand, headdim=headdim, d_state=4, chunk_size=8)
    assert m.headdim == want_hd and m.nheads * m.headdim == m.d_inner
    assert m(torch.randn(1, 10, width)).shape == (1, 10, width)


def test_ngroups():
    m = make(ngroups=2)  # d_inner 32, headdim 8 -> 4 heads, 2 groups
    x = torch.randn(1, 30, WIDTH, dtype=torch.float64)
    assert torch.isfinite(m(x)).all()
    with pytest.raises(ValueError):
        make(ngroups=3)


def test_fast_path_flag_without_cuda():
    m = make(torch.float32, use_fast_path=True)
    m(torch.randn(1, 8, WIDTH))
    assert m.backend == "ssd=torch"  # CPU input always takes the torch scan
