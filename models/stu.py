"""Spectral Transform Unit mixers (paper section I-B).

``STU`` is the full layer of eq. (1) in the form of the Spectral SSM paper: two branches,

    y_t = sum_k  M+_k^T (phi_k  * u)_t  +  M-_k^T (phi-_k * u)_t,   phi-_k[s] = (-1)^s phi_k[s],

with fixed filters phi_k (appendix A) and learned projections M+, M- of shape (K, d_in, d_out).

``STUT`` is the tensordot approximation of eq. (3): each M_k is factored as
M_k[d, o] = M_in[d, o] * M_filt[k, o], so the input is projected once (u M_in) and the filters are
projected once (phi M_filt), leaving one depthwise convolution per output channel.

``STUT(learnable_filters=True)`` makes the filters phi (seq_len, K) a parameter of the layer,
initialised to the fixed spectral filters and then trained (the Flash STU language models: Table XI
"Learnable Filters: Yes"; the paper authors' code wraps the filters in ``nn.Parameter``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.spectral import (
    _flashfftconv_available,
    alternate_sign,
    causal_conv,
    causal_conv_filters,
    causal_conv_flashfft,
    causal_conv_mimo,
    causal_conv_mimo_freq,
    fft_in_float32,
    fft_size,
    spectral_filters,
)


def filter_bank(seq_len: int, k: int, variant: str = "hankel") -> torch.Tensor:
    """``(seq_len, k)`` float64: the k spectral filters of appendix A over ``seq_len`` taps.

    A length-L Hankel matrix has only L eigenvectors, so for ``k > seq_len`` the filters past the
    L-th are zero (the layer keeps its k filter projections; they act once the filters are learned).
    For ``k <= seq_len`` this is :func:`spectral_filters` itself."""
    n = min(int(k), int(seq_len))
    phi = spectral_filters(seq_len, n, variant)
    return F.pad(phi, (0, int(k) - n)) if n < k else phi


def _check_filter_count(k: int, seq_len: int, learnable: bool = False) -> None:
    """Fixed spectral filters need ``k <= seq_len``: a length-L Hankel matrix has only L eigenvectors,
    so filters past the L-th would be zero and their projections dead weights. Learnable filters
    (Flash STU) may start from zero columns."""
    if not learnable and int(k) > int(seq_len):
        raise ValueError(f"num_filters={k} > seq_len={seq_len}: a length-{seq_len} Hankel matrix has only "
                         f"{seq_len} eigenvectors; use num_filters <= seq_len (or learnable_filters=true)")


class _Filters:
    """Per-module cache of the fixed filters in the dtype/device in use (not a parameter)."""

    def __init__(self, seq_len: int, k: int, variant: str):
        self.seq_len, self.k, self.variant = seq_len, k, variant
        self._cache: dict = {}

    def get(self, dtype, device) -> torch.Tensor:
        key = (dtype, str(device))
        if key not in self._cache:
            self._cache[key] = filter_bank(self.seq_len, self.k, self.variant).to(device=device, dtype=dtype)
        return self._cache[key]


def _check_len(x: torch.Tensor, seq_len: int, width: int, name: str):
    if x.dim() != 3 or x.shape[-1] != width:
        raise ValueError(f"{name} expects input (batch, length, {width}), got {tuple(x.shape)}")
    if x.shape[1] > seq_len:
        raise ValueError(f"{name} was built for seq_len={seq_len}; got length {x.shape[1]}")


class STU(nn.Module):
    """Full STU (eq. 1): plus and minus branches with projections M+ and M- (K, d_in, d_out).

    ``form`` chooses how the same function is computed:
      * ``"filters"``: K x width FFT convolutions, then the contraction with M+/M- (best for wide
        layers at batch 1);
      * ``"kernel"``: form the MIMO kernel H[s] = sum_k phi_k[s] M+_k + (-1)^s phi_k[s] M-_k
        (L, d_in, d_out) first, then one FFT of H, one of u and a matmul per frequency (best when
        width <= batch x K);
      * ``"auto"``: pick per call with that cost rule.

    ``kernel_impl`` chooses how the kernel form is evaluated (same function, tests compare):
      * ``"freq"`` (default, fast path): the transform of H is formed in the frequency domain,
        rfft(H)[f] = sum_k Phi_k[f] M+_k + Phi-_k[f] M-_k, from the cached transform Phi of the
        fixed filters (one small real matmul; no FFT of the (L, d_in, d_out) kernel), and the
        per-frequency product is one real batched matmul (:func:`causal_conv_mimo_freq`);
      * ``"time"``: the plain kernel path, form H, FFT it, complex einsum (:func:`causal_conv_mimo`).
    """

    def __init__(
        self,
        width: int,
        seq_len: int,
        num_filters: int = 16,
        filter_variant: str = "hankel",
        use_minus: bool = True,
        form: str = "auto",
        init_scale: float = 1.0,
        kernel_impl: str = "freq",
    ):
        super().__init__()
        if form not in ("auto", "filters", "kernel"):
            raise ValueError(f"unknown STU form {form!r}; valid: auto, filters, kernel")
        if kernel_impl not in ("freq", "time"):
            raise ValueError(f"unknown STU kernel_impl {kernel_impl!r}; valid: freq, time")
        _check_filter_count(num_filters, seq_len)
        self.width, self.seq_len, self.k = width, seq_len, num_filters
        self.form = form
        self.kernel_impl = kernel_impl
        self._spectra: dict = {}
        # With the hankel_L matrix the minus branch is not needed (Agarwal et al. 2023).
        self.use_minus = use_minus and filter_variant == "hankel"
        self.filters = _Filters(seq_len, num_filters, filter_variant)
        std = init_scale / math.sqrt(width * num_filters)
        self.M_plus = nn.Parameter(torch.randn(num_filters, width, width) * std)
        self.M_minus = nn.Parameter(torch.randn(num_filters, width, width) * std) if self.use_minus else None
        self.backend = f"fft=torch,stu_form={form}"

    def choose_form(self, batch: int) -> str:
        if self.form != "auto":
            return self.form
        return "kernel" if self.width <= batch * self.k else "filters"

    def kernel(self, L: int, dtype=None, device=None) -> torch.Tensor:
        """The MIMO impulse response H (L, d_in, d_out) of the layer."""
        dtype = dtype or self.M_plus.dtype
        device = device or self.M_plus.device
        phi = self.filters.get(dtype, device)[:L]
        h = torch.einsum("lk,kdo->ldo", phi, self.M_plus.to(dtype))
        if self.use_minus:
            phi_m = phi * alternate_sign(L, dtype, device)[:, None]
            h = h + torch.einsum("lk,kdo->ldo", phi_m, self.M_minus.to(dtype))
        return h

    def filter_spectrum(self, L: int, dtype, device) -> torch.Tensor:
        """(2, F, K') real: Re and Im of rfft of the filters [phi, (-1)^s phi] (minus branch only
        with use_minus) over their first L taps, n = fft_size(L); computed in float64, cached."""
        key = (L, dtype, str(device))
        if key not in self._spectra:
            phi = self.filters.get(torch.float64, torch.device("cpu"))[:L]
            if self.use_minus:
                phi = torch.cat([phi, phi * alternate_sign(L)[:, None]], dim=1)
            pf = torch.fft.rfft(phi, n=fft_size(L), dim=0)  # (F, K')
            self._spectra[key] = torch.stack([pf.real, pf.imag]).to(device=device, dtype=dtype).contiguous()
        return self._spectra[key]

    def kernel_spectrum(self, L: int, dtype=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Re and Im (F, d_in, d_out) of rfft(kernel(L), n=fft_size(L), dim=0), by linearity."""
        dtype = dtype or self.M_plus.dtype
        device = device or self.M_plus.device
        P = self.filter_spectrum(L, dtype, device)  # (2, F, K')
        M = torch.cat([self.M_plus, self.M_minus], dim=0) if self.use_minus else self.M_plus
        two, F_, Kp = P.shape
        hf = (P.reshape(two * F_, Kp) @ M.to(dtype).reshape(Kp, -1)).view(two, F_, self.width, self.width)
        return hf[0], hf[1]

    @fft_in_float32  # the kernel's transform and the convolution in float32 (half inputs, autocast)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_len(x, self.seq_len, self.width, "STU")
        B, L, _ = x.shape
        form = self.choose_form(B)
        self.backend = f"fft=torch,stu_form={form}"
        if form == "kernel":
            self.backend += f",stu_kernel={self.kernel_impl}"
            if self.kernel_impl == "freq":
                return causal_conv_mimo_freq(x, *self.kernel_spectrum(L, x.dtype, x.device))
            return causal_conv_mimo(x, self.kernel(L, x.dtype, x.device))
        phi = self.filters.get(x.dtype, x.device)[:L]
        if self.use_minus:
            phi = torch.cat([phi, phi * alternate_sign(L, x.dtype, x.device)[:, None]], dim=1)
            M = torch.cat([self.M_plus, self.M_minus], dim=0)
        else:
            M = self.M_plus
        u = causal_conv_filters(x, phi)  # (B, L, K', D)
        return torch.einsum("blkd,kdo->blo", u, M.to(x.dtype))


class STUT(nn.Module):
    """STU with the tensordot approximation (eq. 3).

    ``tied=False`` (default): the plus and minus branches keep their own factors,
        y = (phi M+_filt) * (u M+_in) + (phi- M-_filt) * (u M-_in),
    so the impulse response is nonzero at odd lags.
    ``tied=True``: the public reference's form, one filter projection shared by both branches
        (u M_in convolved with phi M_filt and with its sign-alternated copy, then summed). The
        odd taps cancel, so its impulse response is exactly zero at every odd lag.
        (windsornguyen/flash-stu ``flash_stu/modules/stu.py`` with ``use_approx``: parameters
        ``M_inputs`` (d, d) and ``M_filters`` (K, d); ``utils/stu_utils.py`` ``convolve`` returns
        conv(u M_in, phi M_filt) and (-1)^t conv((-1)^s u M_in, phi M_filt), summed.)
    ``learnable_filters=True``: phi (seq_len, K) is the parameter ``phi`` of this layer, initialised
        to the fixed filters (its own copy per layer); on the ``meta`` device it is left
        uninitialised (counting parameters without computing an eigendecomposition).
    """

    def __init__(
        self,
        width: int,
        seq_len: int,
        num_filters: int = 16,
        filter_variant: str = "hankel",
        use_minus: bool = True,
        tied: bool = False,
        use_flashfftconv: bool = True,
        init_scale: float = 1.0,
        learnable_filters: bool = False,
    ):
        super().__init__()
        _check_filter_count(num_filters, seq_len, learnable_filters)
        self.width, self.seq_len, self.k = width, seq_len, num_filters
        self.use_minus = use_minus and filter_variant == "hankel"
        self.tied = tied
        self.learnable_filters = learnable_filters
        self.use_flashfftconv = use_flashfftconv
        self.filters = _Filters(seq_len, num_filters, filter_variant)
        s_in = init_scale / math.sqrt(width)
        s_f = 1.0 / math.sqrt(num_filters)
        self.M_in_plus = nn.Parameter(torch.randn(width, width) * s_in)
        self.M_filt_plus = nn.Parameter(torch.randn(num_filters, width) * s_f)
        untied_minus = self.use_minus and not tied
        self.M_in_minus = nn.Parameter(torch.randn(width, width) * s_in) if untied_minus else None
        self.M_filt_minus = nn.Parameter(torch.randn(num_filters, width) * s_f) if untied_minus else None
        self.phi = None
        if learnable_filters:  # created last and without the RNG: the other parameters' draws are unchanged
            phi = torch.empty(seq_len, num_filters)
            if phi.device.type != "meta":
                phi.copy_(filter_bank(seq_len, num_filters, filter_variant))
            self.phi = nn.Parameter(phi)
        self.backend = "fft=torch"

    def spectral_basis(self, L: int, dtype, device) -> torch.Tensor:
        """The filters (L, K) in use: the learned ``phi`` or the fixed spectral filters."""
        if self.phi is not None:
            return self.phi[:L].to(dtype)
        return self.filters.get(dtype, device)[:L]

    def channel_filters(self, L: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-output-channel filters (L, d_out) of the plus and (untied) minus branches."""
        phi = self.spectral_basis(L, dtype, device)
        sign = alternate_sign(L, dtype, device)[:, None]
        k_plus = phi @ self.M_filt_plus.to(dtype)
        if not self.use_minus:
            return k_plus, None
        if self.tied:  # the reference: plus and minus share one projected filter
            return k_plus + sign * k_plus, None
        return k_plus, sign * (phi @ self.M_filt_minus.to(dtype))

    def kernel(self, L: int, dtype=None, device=None) -> torch.Tensor:
        """The MIMO impulse response H (L, d_in, d_out) of the layer."""
        dtype = dtype or self.M_in_plus.dtype
        device = device or self.M_in_plus.device
        k_plus, k_minus = self.channel_filters(L, dtype, device)
        h = k_plus[:, None, :] * self.M_in_plus.to(dtype)[None]
        if k_minus is not None:
            h = h + k_minus[:, None, :] * self.M_in_minus.to(dtype)[None]
        return h

    def _conv(self, u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.use_flashfftconv and _flashfftconv_available(u):
            self.backend = "fft=flashfftconv"
            return causal_conv_flashfft(u, k)
        self.backend = "fft=torch"
        return causal_conv(u, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_len(x, self.seq_len, self.width, "STU-T")
        L = x.shape[1]
        k_plus, k_minus = self.channel_filters(L, x.dtype, x.device)
        if k_minus is None:
            return self._conv(x @ self.M_in_plus, k_plus)
        # Both branches through one transform: stack them along the channel axis.
        u = torch.cat([x @ self.M_in_plus, x @ self.M_in_minus], dim=-1)
        y = self._conv(u, torch.cat([k_plus, k_minus], dim=-1))
        return y[..., : self.width] + y[..., self.width :]
