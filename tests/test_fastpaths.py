"""Fast STU paths give the same function as the plain paths (issue 6)."""
import pytest
import torch

from models.spectral import causal_conv_mimo, causal_conv_mimo_freq, fft_size
from models.stu import STU


@pytest.mark.parametrize("L", [1, 7, 64, 100])
def test_mimo_freq_equals_mimo(L):
    B, D, O = 3, 4, 5
    u = torch.randn(B, L, D, dtype=torch.float64)
    h = torch.randn(L, D, O, dtype=torch.float64)
    hf = torch.fft.rfft(h, n=fft_size(L), dim=0)
    y = causal_conv_mimo_freq(u, hf.real.contiguous(), hf.imag.contiguous())
    assert torch.allclose(y, causal_conv_mimo(u, h), atol=1e-10)


def test_mimo_freq_rejects_short_transform():
    u = torch.randn(1, 10, 2)
    hf = torch.zeros(5, 2, 2)  # n = 8 < 2*10 - 1
    with pytest.raises(ValueError):
        causal_conv_mimo_freq(u, hf, hf)


@pytest.mark.parametrize("use_minus", [True, False])
@pytest.mark.parametrize("L", [9, 64, 100])
def test_stu_kernel_freq_equals_plain_paths(L, use_minus):
    stu = STU(8, 128, num_filters=5, use_minus=use_minus).double()
    x = torch.randn(3, L, 8, dtype=torch.float64)
    outs = {}
    for form, impl in [("filters", "time"), ("kernel", "time"), ("kernel", "freq")]:
        stu.form, stu.kernel_impl = form, impl
        outs[form, impl] = stu(x)
    assert "stu_kernel=freq" in stu.backend
    ref = outs["filters", "time"]
    assert torch.allclose(outs["kernel", "time"], ref, atol=1e-10)
    assert torch.allclose(outs["kernel", "freq"], ref, atol=1e-10)
    # the transform of the kernel, formed in the frequency domain, is the FFT of kernel()
    re, im = stu.kernel_spectrum(L)
    hf = torch.fft.rfft(stu.kernel(L), n=fft_size(L), dim=0)
    assert torch.allclose(re, hf.real, atol=1e-12) and torch.allclose(im, hf.imag, atol=1e-12)


def test_stu_kernel_freq_gradients_equal_plain():
    L, W = 50, 6
    x = torch.randn(4, L, W, dtype=torch.float64)
    grads = {}
    for impl in ("filters", "time", "freq"):
        torch.manual_seed(1)
        stu = STU(W, L, num_filters=4, form="filters" if impl == "filters" else "kernel", kernel_impl=
                  "time" if impl == "filters" else impl).double()
        xi = x.clone().requires_grad_(True)
        stu(xi).sin().sum().backward()
        grads[impl] = (xi.grad, stu.M_plus.grad, stu.M_minus.grad)
    for impl in ("time", "freq"):
        for a, b in zip(grads[impl], grads["filters"]):
            assert torch.allclose(a, b, atol=1e-9)


def test_stu_kernel_freq_float32_close_to_plain():
    """The figure-2 shape in float32: the fast path agrees with the per-filter path."""
    stu = STU(32, 100, num_filters=16)
    x = torch.randn(32, 100, 32)
    stu.form = "filters"
    a = stu(x)
    stu.form = "kernel"
    b = stu(x)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()


def test_stu_unknown_kernel_impl():
    with pytest.raises(ValueError):
        STU(4, 8, kernel_impl="triton")


@pytest.mark.parametrize("model, overrides", [
    ("robotics_stu", {"mixer_options": {"stu": {"form": "kernel", "kernel_impl": "freq"}}}),
    ("robotics_stu", {"mixer_options": {"stu": {"form": "kernel", "kernel_impl": "time"}}}),
    ("robotics_stu", {"mixer_options": {"stu": {"form": "filters"}}}),
    ("robotics_stu_t", {}),
    ("s4d", {}),
])
def test_fft_mixers_train_under_bfloat16_autocast(model, overrides):
    """Under bfloat16 autocast (the paper's GPU training) the FFT convolutions run in float32 (cuFFT has
    no bfloat16; the frequency-domain kernel path once failed in torch.complex): forward and backward
    run, the output is bfloat16 within bfloat16 rounding of float32, and the float32 path is untouched."""
    import models

    torch.manual_seed(0)
    m = models.build_model(model, d_in=7, d_out=5, seq_len=32, **overrides)
    x = torch.randn(16, 32, 7)
    y32 = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
    assert (y.float() - y32).abs().max() <= 0.02 * y32.abs().max()
    assert torch.equal(m(x), y32)  # float32 outside autocast: same function, bit for bit


def test_half_inputs_convolve_in_float32():
    from models.spectral import causal_conv

    u, k = torch.randn(2, 16, 3), torch.randn(16, 3)
    y = causal_conv(u.bfloat16(), k.bfloat16())
    assert y.dtype == torch.bfloat16
    ref = causal_conv(u.bfloat16().float(), k.bfloat16().float())
    assert torch.equal(y, ref.bfloat16())
