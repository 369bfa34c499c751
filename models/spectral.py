"""Spectral filters of the STU (paper appendix A, eq. 4) and the causal FFT convolution.

The filters are the top-``k`` eigenvectors of the Hankel matrix

    Z(i, j) = 2 / ((i + j)^3 - (i + j)),   i, j = 1..L                      (eq. 4)

each scaled by its eigenvalue to the power 1/4. ``variant="hankel_L"`` uses the alternative
matrix of the Spectral State Space Models paper (Agarwal et al. 2023),

    Z_L(i, j) = ((-1)^(i+j-2) + 1) * 8 / ((i+j+3)(i+j-1)(i+j+1)),

for which the STU needs no negative (sign-alternated) branch. Everything is computed in float64:
in float32 the eigenvectors past about the 13th are numerical noise.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

VARIANTS = ("hankel", "hankel_L")


def hankel_matrix(seq_len: int, variant: str = "hankel") -> torch.Tensor:
    """The (seq_len, seq_len) float64 Hankel matrix whose eigenvectors are the filters."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown filter variant {variant!r}; valid: {', '.join(VARIANTS)}")
    idx = torch.arange(1, seq_len + 1, dtype=torch.float64)
    s = idx[:, None] + idx[None, :]  # i + j
    if variant == "hankel":
        return 2.0 / (s**3 - s)
    sign = (-1.0) ** (s - 2.0) + 1.0
    return sign * 8.0 / ((s + 3.0) * (s - 1.0) * (s + 1.0))


@functools.lru_cache(maxsize=32)
def _filters_and_eigs(seq_len: int, k: int, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not 1 <= k <= seq_len:
        raise ValueError(f"need 1 <= k <= seq_len, got k={k}, seq_len={seq_len}")
    # One thread, always: LAPACK's eigh rounds differently with another thread count, and these
    # cached filters would then differ between a sweep's worker (1 thread) and a plain process.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sigma, phi = torch.linalg.eigh(hankel_matrix(seq_len, variant))  # ascending eigenvalues
    finally:
        torch.set_num_threads(threads)
    sigma, phi = sigma[-k:].flip(0), phi[:, -k:].flip(1)  # largest first
    # Fix each eigenvector's sign (eigh's is arbitrary) so filters are reproducible across
    # machines: make the entry of largest magnitude positive.
    pivot = phi.abs().argmax(0)
    phi = phi * torch.sign(phi[pivot, torch.arange(k)])
    return phi, sigma


def spectral_filters(seq_len: int, k: int, variant: str = "hankel") -> torch.Tensor:
    """``(seq_len, k)`` float64 filters: top-k eigenvectors scaled by eigenvalue**0.25 (cached)."""
    phi, sigma = _filters_and_eigs(int(seq_len), int(k), variant)
    return (phi * sigma.clamp_min(0.0) ** 0.25).clone()


def spectral_eigs(seq_len: int, k: int, variant: str = "hankel") -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled orthonormal eigenvectors ``(seq_len, k)`` and eigenvalues ``(k,)``, float64."""
    phi, sigma = _filters_and_eigs(int(seq_len), int(k), variant)
    return phi.clone(), sigma.clone()


def alternate_sign(seq_len: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """(-1)^s for s = 0..seq_len-1: the minus branch of eq. (1) convolves with phi[s] * (-1)^s."""
    s = torch.arange(seq_len, device=device)
    return (1 - 2 * (s % 2)).to(dtype)


# ---------------------------------------------------------------------------------------------
# Causal convolution through the FFT.
# ---------------------------------------------------------------------------------------------

_HALF = (torch.float16, torch.bfloat16)


def fft_in_float32(fn):
    """Run an FFT convolution (or a mixer's forward) whose first argument is the input in float32 when
    that input is half precision or autocast is on, and return the input's dtype. cuFFT has no
    bfloat16 (and half-precision FFTs need power-of-two sizes and lose accuracy), and under autocast
    the per-frequency products would be cast back to half, which ``torch.complex`` refuses. A float32
    input outside autocast takes the plain path, unchanged."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        u = args[0] if torch.is_tensor(args[0]) else args[1]  # a function's input, or a method's after self
        dev = u.device.type
        if u.dtype not in _HALF and not torch.is_autocast_enabled(dev):
            return fn(*args, **kwargs)
        up = lambda a: a.float() if torch.is_tensor(a) and a.dtype in _HALF else a  # noqa: E731
        with torch.autocast(device_type=dev, enabled=False):
            out = fn(*map(up, args), **{k: up(v) for k, v in kwargs.items()})
        return out.to(u.dtype)
    return wrapper


def fft_size(seq_len: int) -> int:
    """FFT length for a causal convolution of two length-L signals: a power of two >= 2L - 1.

    A shorter transform wraps the tail of the linear convolution onto its head, so outputs at
    early times would see late inputs (a leak of the future).
    """
    return 1 << math.ceil(math.log2(max(2 * seq_len - 1, 1)))


def _flashfftconv_available(x: torch.Tensor) -> bool:
    if not x.is_cuda:
        return False
    try:
        import flashfftconv  # noqa: F401
    except ImportError:
        return False
    return True


@fft_in_float32
def causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Depthwise causal convolution ``y[b, t, c] = sum_{s<=t} k[s, c] u[b, t-s, c]``.

    u: (B, L, C); k: (Lk, C) with Lk >= L (only the first L taps matter). Returns (B, L, C).
    """
    L = u.shape[1]
    n = fft_size(L)
    uf = torch.fft.rfft(u, n=n, dim=1)
    kf = torch.fft.rfft(k[:L], n=n, dim=0)
    return torch.fft.irfft(uf * kf, n=n, dim=1)[:, :L].to(u.dtype)


@fft_in_float32
def causal_conv_filters(u: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Every channel of u against every filter: (B, L, D) x (L, K) -> (B, L, K, D)."""
    L = u.shape[1]
    n = fft_size(L)
    uf = torch.fft.rfft(u, n=n, dim=1)  # (B, F, D)
    pf = torch.fft.rfft(phi[:L], n=n, dim=0)  # (F, K)
    y = torch.fft.irfft(uf[:, :, None, :] * pf[None, :, :, None], n=n, dim=1)
    return y[:, :L].to(u.dtype)


@fft_in_float32
def causal_conv_mimo(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Multi-input multi-output causal convolution ``y_t = sum_s h[s]^T u_{t-s}``.

    u: (B, L, D); h: (L, D, O). One FFT of h, one of u, and a matmul per frequency.
    """
    L = u.shape[1]
    n = fft_size(L)
    uf = torch.fft.rfft(u, n=n, dim=1)  # (B, F, D)
    hf = torch.fft.rfft(h[:L], n=n, dim=0)  # (F, D, O)
    yf = torch.einsum("bfd,fdo->bfo", uf, hf)
    return torch.fft.irfft(yf, n=n, dim=1)[:, :L].to(u.dtype)


@fft_in_float32
def causal_conv_mimo_freq(u: torch.Tensor, hf_re: torch.Tensor, hf_im: torch.Tensor) -> torch.Tensor:
    """:func:`causal_conv_mimo` with the kernel given by its transform, in real arithmetic.

    u: (B, L, D); hf_re, hf_im: (F, D, O), the real and imaginary parts of ``rfft(h, n, dim=0)`` for
    n = fft_size(L) (F = n // 2 + 1). The per-frequency complex product is done as ONE real batched matmul,
    ``[Re u; Im u] @ [Re h | Im h]`` (F, 2B, D) x (F, D, 2O), which is faster than a complex einsum
    on CPU and has a plain real backward. Same function as causal_conv_mimo (tests compare).
    """
    B, L, D = u.shape
    F_, O = hf_re.shape[0], hf_re.shape[-1]
    n = fft_size(L)
    if F_ != n // 2 + 1:
        raise ValueError(f"kernel transform has {F_} frequencies; L={L} needs rfft length fft_size(L)={n}, "
                         f"i.e. {n // 2 + 1} frequencies")
    uf = torch.view_as_real(torch.fft.rfft(u, n=n, dim=1))  # (B, F, D, 2)
    U = uf.permute(1, 3, 0, 2).reshape(F_, 2 * B, D)  # rows: Re u (B), then Im u (B)
    Y = torch.bmm(U, torch.cat([hf_re, hf_im], dim=-1))  # (F, 2B, 2O)
    re = Y[:, :B, :O] - Y[:, B:, O:]  # Re u Re h - Im u Im h
    im = Y[:, :B, O:] + Y[:, B:, :O]  # Re u Im h + Im u Re h
    yf = torch.complex(re, im).transpose(0, 1)  # (B, F, O)
    return torch.fft.irfft(yf, n=n, dim=1)[:, :L].to(u.dtype)


def direct_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """O(L^2) reference for :func:`causal_conv` (tests only)."""
    B, L, C = u.shape
    y = torch.zeros_like(u)
    for t in range(L):
        # sum_{s=0..t} k[s] * u[t-s]
        y[:, t] = (k[: t + 1].flip(0)[None] * u[:, : t + 1]).sum(1)
    return y


def causal_conv_flashfft(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """flashfftconv path (CUDA only), with the same causal zero-padding to fft_size(L)."""
    from flashfftconv import FlashFFTConv  # type: ignore

    L = u.shape[1]
    n = fft_size(L)
    conv = _FLASH_CACHE.get((n, u.dtype, u.device))
    if conv is None:
        conv = FlashFFTConv(n, dtype=torch.bfloat16 if u.dtype == torch.bfloat16 else torch.float16).to(u.device)
        _FLASH_CACHE[(n, u.dtype, u.device)] = conv
    x = F.pad(u.transpose(1, 2).contiguous(), (0, n - L))  # (B, C, n)
    kk = F.pad(k[:L].transpose(0, 1).float().contiguous(), (0, n - L))  # (C, n)
    y = conv(x.to(conv.dtype if hasattr(conv, "dtype") else x.dtype), kk)
    return y[..., :L].transpose(1, 2).to(u.dtype)


_FLASH_CACHE: dict = {}
