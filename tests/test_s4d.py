"""Tests for models/s4d.py (CPU, float64 where exactness is checked)."""

import pytest
import torch

from models.s4d import S4D

WIDTH, SEQ_LEN = 8, 300


def make(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    return S4D(WIDTH, SEQ_LEN, d_state=16, **kw).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("L", [1, 17, 64, 300])
def test_shape_dtype_finite(dtype, L):
    m = make(dtype)
    x = torch.randn(3, L, WIDTH, dtype=dtype)
    y = m(x)
    assert y.shape == (3, L, WIDTH) and y.dtype == dtype
    assert torch.isfinite(y).all()
    assert m.backend == "fft=torch"


@pytest.mark.parametrize("L", [5, 64, 100, 257])
def test_causal(L):
    # One batched forward: row 0 is the input, row 1+k has a perturbation at time t_k.
    m = make().eval()
    ts = sorted({0, L // 3, L // 2, L - 1})
    x = torch.randn(1, L, WIDTH, dtype=torch.float64).repeat(1 + len(ts), 1, 1)
    for k, t in enumerate(ts):
        x[1 + k, t] += torch.randn(WIDTH, dtype=torch.float64)
    y = m(x)
    for k, t in enumerate(ts):
        assert torch.allclose(y[1 + k, :t], y[0, :t], atol=1e-10, rtol=0)
        assert not torch.allclose(y[1 + k, t], y[0, t])


@pytest.mark.parametrize("L", [1, 33, 128])
def test_kernel_equals_unrolled_recurrence(L):
    m = make()
    K = m.kernel(L)
    assert K.shape == (WIDTH, L) and K.dtype == torch.float64
    # impulse response of x_k = dA x_{k-1} + dB u_k, y_k = 2 Re(C x_k)
    impulse = torch.zeros(1, L, WIDTH, dtype=torch.float64)
    impulse[:, 0] = 1.0
    K_rec = m.recurrent_reference(impulse)[0].T
    assert torch.allclose(K, K_rec, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("L", [1, 50, 129, 300])
def test_fft_conv_equals_recurrence(L):
    m = make()
    u = torch.randn(2, L, WIDTH, dtype=torch.float64)
    assert torch.allclose(m.ssm_conv(u), m.recurrent_reference(u), atol=1e-8, rtol=1e-8)


def test_gradients_reach_every_parameter():
    m = make(torch.float32)
    m(torch.randn(2, 40, WIDTH)).pow(2).mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_optim_attributes():
    m = make(lr=1e-3)
    for name in ("log_dt", "log_A_real", "A_imag"):
        assert getattr(m, name)._optim == {"lr": 1e-3, "weight_decay": 0.0}
    assert not hasattr(m.C, "_optim") and not hasattr(m.D, "_optim")
    m = make(lr=None)
    assert m.log_dt._optim == {"weight_decay": 0.0}
    m = make(lr=0.0)  # frozen: buffers, as in the official code
    assert "log_dt" in dict(m.named_buffers()) and "log_dt" not in dict(m.named_parameters())


def test_init_s4d_lin():
    m = make()
    A = torch.complex(-torch.exp(m.log_A_real), m.A_imag)
    n = torch.arange(8, dtype=torch.float64)
    assert torch.allclose(A.real, torch.full_like(A.real, -0.5))
    assert torch.allclose(A.imag, (torch.pi * n).expand(WIDTH, -1))
    dt = m.log_dt.exp()
    assert (dt >= 1e-3).all() and (dt <= 1e-1).all()


def test_dropout_train_eval():
    m = make(dropout=0.5)
    x = torch.randn(2, 20, WIDTH, dtype=torch.float64)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    assert torch.isfinite(m(x)).all()


def test_too_long_rejected():
    with pytest.raises(ValueError):
        make()(torch.randn(1, SEQ_LEN + 1, WIDTH, dtype=torch.float64))
