"""Spectral filters (appendix A), the causal FFT convolution and the STU / STU-T layers."""
import pytest
import torch

from models.spectral import (causal_conv, causal_conv_filters, causal_conv_mimo, direct_causal_conv, fft_size,
                             hankel_matrix, spectral_eigs, spectral_filters)
from models.stu import STU, STUT


@pytest.mark.parametrize("variant", ["hankel", "hankel_L"])
@pytest.mark.parametrize("L,k", [(100, 16), (257, 24)])
def test_filters_are_eigenvectors(L, k, variant):
    Z = hankel_matrix(L, variant)
    assert Z.dtype == torch.float64 and torch.allclose(Z, Z.T)
    phi, sigma = spectral_eigs(L, k, variant)
    assert phi.shape == (L, k) and phi.dtype == torch.float64
    assert torch.all(sigma[:-1] >= sigma[1:]), "largest eigenvalues first"
    residual = Z @ phi - phi * sigma
    assert residual.abs().max() < 1e-12
    assert torch.allclose(phi.T @ phi, torch.eye(k, dtype=torch.float64), atol=1e-10)
    # The eigenvalues really are the top-k of Z.
    all_eigs = torch.linalg.eigvalsh(Z)
    assert torch.allclose(sigma, all_eigs.flip(0)[:k], rtol=1e-9, atol=1e-15)
    f = spectral_filters(L, k, variant)
    assert torch.allclose(f, phi * sigma.clamp_min(0) ** 0.25)


def test_hankel_entries_match_eq4():
    Z = hankel_matrix(5)
    i, j = 2, 3  # 0-based indices -> i+j = 7 in 1-based terms
    s = (i + 1) + (j + 1)
    assert Z[i, j] == pytest.approx(2.0 / (s**3 - s))


def test_filters_cached_and_deterministic():
    a = spectral_filters(64, 8)
    b = spectral_filters(64, 8)
    assert torch.equal(a, b)
    a[0, 0] = 123.0  # callers get a copy; the cache stays intact
    assert spectral_filters(64, 8)[0, 0] != 123.0


@pytest.mark.parametrize("L", [1, 5, 64, 100, 129])
def test_fft_conv_equals_direct(L):
    assert fft_size(L) >= 2 * L - 1
    u = torch.randn(2, L, 3, dtype=torch.float64)
    k = torch.randn(L, 3, dtype=torch.float64)
    assert torch.allclose(causal_conv(u, k), direct_causal_conv(u, k), atol=1e-10)
    phi = torch.randn(L, 4, dtype=torch.float64)
    y = causal_conv_filters(u, phi)
    for j in range(4):
        assert torch.allclose(y[:, :, j], direct_causal_conv(u, phi[:, j : j + 1].expand(L, 3)), atol=1e-10)


def test_mimo_conv_equals_direct():
    L, D, O = 37, 3, 4
    u = torch.randn(2, L, D, dtype=torch.float64)
    h = torch.randn(L, D, O, dtype=torch.float64)
    y = causal_conv_mimo(u, h)
    ref = torch.zeros(2, L, O, dtype=torch.float64)
    for t in range(L):
        for s in range(t + 1):
            ref[:, t] += u[:, t - s] @ h[s]
    assert torch.allclose(y, ref, atol=1e-10)


def _impulse_response(layer, L, width):
    """Response of each output channel at lag s to a unit impulse on each input at time 0."""
    x = torch.zeros(width, L, width, dtype=torch.float64)
    x[torch.arange(width), 0, torch.arange(width)] = 1.0
    return layer(x)  # (d_in, L, d_out): [d, s, o] = H[s, d, o]


def test_stu_matches_equation_1_directly():
    L, W, K = 40, 4, 6
    stu = STU(W, L, num_filters=K, form="filters").double()
    phi = spectral_filters(L, K)
    x = torch.randn(2, L, W, dtype=torch.float64)
    y = stu(x)
    ref = torch.zeros_like(y)
    for t in range(L):
        for s in range(t + 1):
            for k in range(K):
                ref[:, t] += phi[s, k] * x[:, t - s] @ stu.M_plus[k] + (-1) ** s * phi[s, k] * x[:, t - s] @ stu.M_minus[k]
    assert torch.allclose(y, ref, atol=1e-10)


@pytest.mark.parametrize("L", [9, 64, 100])
def test_stu_forms_agree(L):
    stu = STU(8, 128, num_filters=5).double()
    x = torch.randn(3, L, 8, dtype=torch.float64)
    stu.form = "filters"
    a = stu(x)
    stu.form = "kernel"
    b = stu(x)
    assert torch.allclose(a, b, atol=1e-10)
    assert "stu_form=kernel" in stu.backend


def test_stu_auto_form_cost_rule():
    stu = STU(32, 100, num_filters=16)
    assert stu.choose_form(batch=32) == "kernel"  # width 32 < 32 * 16
    wide = STU(512, 100, num_filters=16)
    assert wide.choose_form(batch=1) == "filters"  # width 512 > 1 * 16


def test_stu_t_untied_has_odd_lags_and_tied_does_not():
    L, W = 32, 4
    untied = STUT(W, L, num_filters=8).double()
    tied = STUT(W, L, num_filters=8, tied=True).double()
    h_untied = _impulse_response(untied, L, W)
    h_tied = _impulse_response(tied, L, W)
    assert h_untied[:, 1::2].abs().max() > 1e-3, "untied STU-T must respond at odd lags"
    assert h_tied[:, 1::2].abs().max() < 1e-12, "the reference (tied) form is zero at odd lags"
    assert h_tied[:, 0::2].abs().max() > 1e-3
    # kernel() describes the same impulse response the forward pass computes
    assert torch.allclose(h_untied.permute(1, 0, 2), untied.kernel(L), atol=1e-10)


def test_stu_t_is_the_tensordot_factorisation_of_stu():
    """With M+_k[d,o] = M_in[d,o] M_filt[k,o] (and likewise for M-), STU == STU-T."""
    L, W, K = 30, 3, 5
    t = STUT(W, L, num_filters=K).double()
    s = STU(W, L, num_filters=K, form="filters").double()
    with torch.no_grad():
        s.M_plus.copy_(t.M_in_plus[None] * t.M_filt_plus[:, None, :])
        s.M_minus.copy_(t.M_in_minus[None] * t.M_filt_minus[:, None, :])
    x = torch.randn(2, L, W, dtype=torch.float64)
    assert torch.allclose(s(x), t(x), atol=1e-10)


def test_hankel_L_variant_drops_minus_branch():
    stu = STU(4, 16, num_filters=3, filter_variant="hankel_L")
    assert stu.M_minus is None
    assert stu(torch.randn(1, 16, 4)).shape == (1, 16, 4)


def test_filters_do_not_depend_on_the_thread_count():
    """The cached filters are computed on one thread whatever the caller's thread count, so a run in
    a sweep worker (1 thread) and in a plain process get the same filters (LAPACK's eigh rounds
    differently with another thread count)."""
    from models import spectral

    old = torch.get_num_threads()
    try:
        out = []
        for n in (1, 2):
            torch.set_num_threads(n)
            spectral._filters_and_eigs.cache_clear()
            out.append(spectral._filters_and_eigs(256, 16, "hankel"))
            assert torch.get_num_threads() == n  # restored
        assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    finally:
        torch.set_num_threads(old)
        spectral._filters_and_eigs.cache_clear()
