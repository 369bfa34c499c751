"""S4D: the diagonal structured state-space layer (Gu, Gupta, Goel, Re, 2022,
"On the Parameterization and Initialization of Diagonal State Space Models"),
written to match the official minimal S4D (state-spaces/s4, models/s4/s4d.py)
in plain PyTorch, in the (B, L, H) layout used by this suite.

Per channel h = 1..H the layer is a continuous-time diagonal SSM with N/2
complex modes (the other N/2 are their complex conjugates, hence the factor 2
and the real part below):

    x'(t) = A x(t) + B u(t),     y(t) = 2 Re(C x(t)) + D u(t),    B = 1

Parameterisation and initialisation (S4D-Lin):

    A_n   = -exp(log_A_real_n) + i * A_imag_n,  log_A_real = log(1/2),  A_imag_n = pi * n
    dt    = exp(log_dt),                         log_dt ~ U[log dt_min, log dt_max]
    C_n   ~ complex standard normal (real and imaginary parts N(0, 1/2))
    D     ~ N(0, 1)

Zero-order-hold discretisation (elementwise, A is diagonal):

    dA = exp(dt A),      dB = (exp(dt A) - 1) / A * B

so the discrete recurrence is

    x_k = dA x_{k-1} + dB u_k,     y_k = 2 Re(C x_k)          (x_{-1} = 0)

and unrolling it gives the causal convolution y = K * u with the Vandermonde
kernel

    K_l = 2 Re( sum_n C_n dB_n dA_n^l ),   l = 0..L-1.                 (kernel)

The layer then computes (all per channel, u of shape (B, L, H)):

    y   = causal_conv(u, K) + D * u       FFT convolution, FFT length >= 2L,
                                           so there is no circular wrap-around
    y   = dropout(GELU(y))                 dropout mask tied over time (as DropoutNd)
    out = GLU(W y + b),  W: H -> 2H        the official 1x1 Conv1d + GLU

The SSM parameters log_dt, log_A_real, A_imag get their own optimizer group,
as in the official code: attribute ``_optim = {"weight_decay": 0.0, "lr": lr}``
(no "lr" key when ``lr is None``). With ``lr == 0.0`` they are registered as
buffers (frozen), also as in the official code. C is an ordinary parameter.

``recurrent_reference`` runs the discrete recurrence step by step; the tests
check that it equals the FFT convolution path and that ``kernel(L)`` equals
its impulse response.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.spectral import fft_in_float32


class S4D(nn.Module):
    """Diagonal S4 sequence mixer, (B, L, width) -> (B, L, width), causal."""

    backend = "fft=torch"

    def __init__(
        self,
        width: int,
        seq_len: int,
        d_state: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        lr: float | None = 1e-3,
        dropout: float = 0.0,
    ):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be an even number >= 2, got {d_state}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        H, N2 = width, d_state // 2
        self.width = width
        self.seq_len = seq_len
        self.d_state = d_state
        self.lr = lr
        self.dropout = dropout
        self.backend = "fft=torch"

        # --- SSM parameters (S4D-Lin initialisation) ---------------------------
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        log_A_real = torch.full((H, N2), math.log(0.5))
        A_imag = math.pi * torch.arange(N2, dtype=torch.get_default_dtype()).repeat(H, 1)
        self._register_ssm("log_dt", log_dt, lr)
        self._register_ssm("log_A_real", log_A_real, lr)
        self._register_ssm("A_imag", A_imag, lr)

        # C: complex (H, N/2) stored as real (H, N/2, 2); complex standard normal.
        self.C = nn.Parameter(torch.randn(H, N2, 2) * math.sqrt(0.5))
        # D: skip connection.
        self.D = nn.Parameter(torch.randn(H))

        # --- position-wise output transform: 1x1 conv H -> 2H, then GLU ----------
        # A kernel-size-1 Conv1d on (B, H, L) is exactly a Linear on (B, L, H)
        # (same default init: fan_in = H).
        self.output_linear = nn.Linear(H, 2 * H)

    def _register_ssm(self, name: str, tensor: torch.Tensor, lr: float | None) -> None:
        """SSM parameter with its own optimizer settings (zero weight decay, lr)."""
        if lr == 0.0:
            self.register_buffer(name, tensor)
            return
        self.register_parameter(name, nn.Parameter(tensor))
        optim = {"weight_decay": 0.0}
        if lr is not None:
            optim["lr"] = lr
        getattr(self, name)._optim = optim

    # ------------------------------------------------------------------ SSM ---
    def _continuous(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Complex dt*A, A and C, each (H, N/2)."""
        dt = torch.exp(self.log_dt).unsqueeze(-1)                     # (H, 1)
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)   # (H, N/2)
        C = torch.view_as_complex(self.C.contiguous())
        return dt * A, A, C

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ZOH discretisation with B = 1. Returns complex (dA, dB, C), each (H, N/2)."""
        dtA, A, C = self._continuous()
        dA = torch.exp(dtA)
        dB = (dA - 1.0) / A
        return dA, dB, C

    def kernel(self, L: int) -> torch.Tensor:
        """Convolution kernel K (H, L), real: K_l = 2 Re(sum_n C_n dB_n dA_n^l)."""
        dtA, A, C = self._continuous()
        CdB = C * (torch.exp(dtA) - 1.0) / A                          # (H, N/2)
        ell = torch.arange(L, device=dtA.device, dtype=self.log_dt.dtype)
        vander = torch.exp(dtA.unsqueeze(-1) * ell)                   # dA^l, (H, N/2, L)
        return 2.0 * torch.einsum("hn,hnl->hl", CdB, vander).real

    @fft_in_float32
    def ssm_conv(self, u: torch.Tensor) -> torch.Tensor:
        """Causal convolution of u (B, L, H) with kernel(L), via FFT of length >= 2L."""
        L = u.shape[1]
        k = self.kernel(L)                                            # (H, L)
        n_fft = 1 << (2 * L - 1).bit_length()                         # power of two >= 2L
        k_f = torch.fft.rfft(k, n=n_fft, dim=-1)                      # (H, F)
        u_f = torch.fft.rfft(u, n=n_fft, dim=1)                       # (B, F, H)
        y = torch.fft.irfft(u_f * k_f.transpose(0, 1), n=n_fft, dim=1)
        return y[:, :L]

    @torch.no_grad()
    def recurrent_reference(self, u: torch.Tensor) -> torch.Tensor:
        """Step-by-step x_k = dA x_{k-1} + dB u_k, y_k = 2 Re(C x_k); (B, L, H).

        Slow reference for tests; equals ``ssm_conv(u)`` (no D term).
        """
        dA, dB, C = self.discretize()
        Bsz, L, H = u.shape
        x = torch.zeros(Bsz, *dA.shape, dtype=dA.dtype, device=u.device)  # (B, H, N/2)
        ys = []
        for k in range(L):
            x = dA * x + dB * u[:, k, :, None]
            ys.append(2.0 * (C * x).sum(-1).real)
        return torch.stack(ys, dim=1)

    # -------------------------------------------------------------- forward ---
    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 3 or u.shape[-1] != self.width:
            raise ValueError(f"expected (B, L, {self.width}), got {tuple(u.shape)}")
        if u.shape[1] > self.seq_len:
            raise ValueError(f"sequence length {u.shape[1]} > seq_len {self.seq_len}")
        y = self.ssm_conv(u) + u * self.D
        y = F.gelu(y)
        if self.training and self.dropout > 0.0:
            # Dropout mask tied over the time axis (one mask per (batch, channel)).
            keep = torch.rand(u.shape[0], 1, u.shape[2], device=u.device) >= self.dropout
            y = y * keep.to(y.dtype) / (1.0 - self.dropout)
        return F.glu(self.output_linear(y), dim=-1)

    def extra_repr(self) -> str:
        return (f"width={self.width}, seq_len={self.seq_len}, d_state={self.d_state}, "
                f"lr={self.lr}, dropout={self.dropout}, backend={self.backend!r}")
