"""Mamba-2 block (Dao & Gu, 2024, "Transformers are SSMs: Generalized Models and
Efficient Algorithms Through Structured State Space Duality"), in plain PyTorch,
following the layout of the official ``mamba_ssm.Mamba2`` / ``Mamba2Simple``.

Block, for input u of shape (B, L, width), d_inner = expand * width, nheads heads
of size headdim (d_inner = nheads * headdim), ngroups groups of (B, C):

    [z, x, B, C, dt] = in_proj(u)                   z, x: d_inner; B, C: ngroups*d_state; dt: nheads
    [x, B, C]        = SiLU(causal_depthwise_conv1d([x, B, C]))     kernel d_conv
    A                = -exp(A_log)                  one scalar per head
    dt               = softplus(dt + dt_bias)
    y                = SSD(x, dt, A, B, C) + D * x  D one scalar per head
    y                = RMSNorm(y * SiLU(z)) * weight    gated RMSNorm (norm_before_gate=False),
                                                        normalised over groups of d_inner/ngroups
    out              = out_proj(y)

SSD (the selective state-space recurrence) for each head h with state
h_t in R^{headdim x d_state}; B_t, C_t in R^{d_state} are those of the head's group:

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T,     y_t = h_t C_t.            (SSD)

It is evaluated by the chunked "minimal SSD" algorithm (Listing 1 of the paper):
split time into chunks of length Q = chunk_size, write a_t = dt_t A and
S_t = a_1 + ... + a_t (cumulative within a chunk), then

  1. intra-chunk (quadratic / attention-like form):
         Y_diag[i] = sum_{j<=i in chunk} (C_i . B_j) exp(S_i - S_j) dt_j x_j
  2. state of each chunk at its end, from its own inputs:
         s_c = sum_{j in chunk c} exp(S_end - S_j) dt_j x_j B_j^T
  3. inter-chunk state passing (a scalar-decay recurrence over chunks):
         H_c = exp(S_end(c-1)) H_{c-1} + s_{c-1}      (H_c = state entering chunk c, H_0 = 0)
  4. contribution of the incoming state:
         Y_off[i] = exp(S_i) H_c C_i
     y = Y_diag + Y_off.

Inputs of any length L are zero-padded at the end to a multiple of Q (dt = 0 there,
which contributes nothing and does not affect earlier outputs) and cropped back.
``ssd_recurrent_reference`` evaluates (SSD) by a plain loop over time; tests compare.

headdim rule: the official code asserts d_inner % headdim == 0. Here the requested
headdim is clipped to the largest divisor of d_inner that is <= headdim (so
nheads = d_inner // headdim >= 1 always); ngroups must divide nheads.

Backends: when ``mamba_ssm`` is importable, ``use_fast_path`` is set and the input is
a CUDA tensor in float32/float16/bfloat16, the SSD scan (with the D skip) is done by
``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined`` and ``backend`` is
"ssd=mamba_ssm"; otherwise the torch scan below runs and ``backend`` is "ssd=torch".
``backend`` is set in __init__ to the path expected on this machine and is updated
by every forward to the path actually taken.

Parameters A_log, D and dt_bias carry ``_optim = {"weight_decay": 0.0}`` (the official
code marks them ``_no_weight_decay``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

FAST_PATH_ERROR: str | None = None  # why the kernels below are not importable here, if they are not
try:  # optional CUDA/Triton kernels
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
except Exception as e:  # ImportError, or a broken CUDA/Triton install
    mamba_chunk_scan_combined = None
    FAST_PATH_ERROR = f"{type(e).__name__}: {e}"

_FAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- SSD ---
def segsum(a: torch.Tensor) -> torch.Tensor:
    """Segment sums: out[..., i, j] = a[..., j+1] + ... + a[..., i] for j <= i, -inf above.

    Computed by a masked cumulative sum (not a difference of cumsums) for accuracy;
    exp(segsum(a)) is the lower-triangular decay matrix of the scalar recurrence.
    """
    T = a.shape[-1]
    a = a.unsqueeze(-1).expand(*a.shape, T)                   # [..., i, j] = a_i
    strictly_lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), -1)
    a = a.masked_fill(~strictly_lower, 0.0)
    out = torch.cumsum(a, dim=-2)                             # sum_{j < k <= i} a_k
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device))
    return out.masked_fill(~lower, float("-inf"))


def _expand_groups(t: torch.Tensor, nheads: int) -> torch.Tensor:
    """(B, L, G, N) -> (B, L, H, N): head h uses group h // (H // G)."""
    return t.repeat_interleave(nheads // t.shape[2], dim=2)


def ssd_chunked(x, dt, A, B, C, chunk_size: int) -> torch.Tensor:
    """Chunked SSD scan (minimal SSD algorithm), any sequence length.

    x: (B, L, H, P), dt: (B, L, H) (already positive), A: (H,), B, C: (B, L, G, N).
    Returns y: (B, L, H, P) with h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t.
    """
    Bsz, L, H, P = x.shape
    Q = chunk_size
    pad = (-L) % Q
    if pad:  # zero dt and x on the padded tail: no contribution, no effect on t < L
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    nc = (L + pad) // Q
    B = _expand_groups(B, H)
    C = _expand_groups(C, H)

    # Chunk: (b, c, q, ...); a_t = dt_t A laid out as (b, h, c, q).
    X = (x * dt.unsqueeze(-1)).reshape(Bsz, nc, Q, H, P)      # dt_t x_t
    B = B.reshape(Bsz, nc, Q, H, -1)
    C = C.reshape(Bsz, nc, Q, H, -1)
    a = (dt * A).reshape(Bsz, nc, Q, H).permute(0, 3, 1, 2)   # (b, h, c, q)
    S = torch.cumsum(a, dim=-1)                               # (b, h, c, q)

    # 1. intra-chunk outputs: (C_i . B_j) exp(S_i - S_j) X_j for j <= i.
    decay = torch.exp(segsum(a))                              # (b, h, c, q, q)
    Y_diag = torch.einsum("bcihn,bcjhn,bhcij,bcjhp->bcihp", C, B, decay, X)

    # 2. each chunk's end state from its own inputs.
    decay_to_end = torch.exp(S[..., -1:] - S)                 # (b, h, c, q)
    states = torch.einsum("bcjhn,bhcj,bcjhp->bchpn", B, decay_to_end, X)

    # 3. pass states across chunks: H_c = sum_{c' < c} exp(S_end(c'+1..c-1)) s_{c'}.
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)   # (b, c+1, h, p, n)
    chunk_decay = torch.exp(segsum(F.pad(S[..., -1], (1, 0))))             # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)[:, :-1]  # entering each chunk

    # 4. contribution of the state entering the chunk: exp(S_i) H_c C_i.
    Y_off = torch.einsum("bcihn,bchpn,bhci->bcihp", C, states, torch.exp(S))

    y = (Y_diag + Y_off).reshape(Bsz, nc * Q, H, P)
    return y[:, :L]


@torch.no_grad()
def ssd_recurrent_reference(x, dt, A, B, C) -> torch.Tensor:
    """Step-by-step SSD: h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t.

    Same shapes as ``ssd_chunked``; slow, for tests.
    """
    Bsz, L, H, P = x.shape
    B = _expand_groups(B, H)
    C = _expand_groups(C, H)
    h = x.new_zeros(Bsz, H, P, B.shape[-1])
    ys = []
    for t in range(L):
        dA = torch.exp(dt[:, t] * A)                                      # (b, h)
        h = dA[..., None, None] * h + torch.einsum(
            "bh,bhp,bhn->bhpn", dt[:, t], x[:, t], B[:, t])
        ys.append(torch.einsum("bhpn,bhn->bhp", h, C[:, t]))
    return torch.stack(ys, dim=1)


# --------------------------------------------------------------------------- block ---
def _clip_headdim(d_inner: int, headdim: int) -> int:
    """Largest divisor of d_inner that is <= headdim (and >= 1)."""
    hd = max(1, min(headdim, d_inner))
    while d_inner % hd:
        hd -= 1
    return hd


class Mamba2(nn.Module):
    """Mamba-2 sequence mixer, (B, L, width) -> (B, L, width), causal."""

    def __init__(
        self,
        width: int,
        seq_len: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 32,
        ngroups: int = 1,
        chunk_size: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        A_init_range: tuple[float, float] = (1, 16),
        use_fast_path: bool = True,
    ):
        super().__init__()
        self.width = width
        self.seq_len = seq_len
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * width)
        self.headdim = _clip_headdim(self.d_inner, headdim)
        self.nheads = self.d_inner // self.headdim
        if ngroups < 1 or self.nheads % ngroups:
            raise ValueError(f"ngroups={ngroups} must divide nheads={self.nheads}")
        self.ngroups = ngroups
        self.chunk_size = chunk_size
        self.use_fast_path = use_fast_path
        lo, hi = float(A_init_range[0]), float(A_init_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"A_init_range must satisfy 0 < lo <= hi, got {A_init_range}")

        # in_proj -> [z, x, B, C, dt]
        d_bc = self.ngroups * self.d_state
        self.in_proj = nn.Linear(width, 2 * self.d_inner + 2 * d_bc + self.nheads, bias=False)

        # causal depthwise conv over [x, B, C]
        conv_dim = self.d_inner + 2 * d_bc
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, kernel_size=d_conv, groups=conv_dim,
                                padding=d_conv - 1, bias=True)

        # dt_bias = softplus^{-1}(dt0), dt0 log-uniform in [dt_min, dt_max], floored.
        dt0 = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min))
                        + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt0 + torch.log(-torch.expm1(-dt0)))
        # A = -exp(A_log), |A| uniform in A_init_range.
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(lo, hi)))
        # D skip, one per head.
        self.D = nn.Parameter(torch.ones(self.nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._optim = {"weight_decay": 0.0}

        # gated RMSNorm weight and output projection
        self.norm_eps = 1e-5
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, width, bias=False)

        cuda_ok = torch.cuda.is_available()
        self.backend = ("ssd=mamba_ssm" if (use_fast_path and mamba_chunk_scan_combined is not None
                                            and cuda_ok) else "ssd=torch")

    def _use_fast(self, x: torch.Tensor) -> bool:
        return (self.use_fast_path and mamba_chunk_scan_combined is not None
                and x.is_cuda and x.dtype in _FAST_DTYPES)

    def gated_rmsnorm(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """RMSNorm(y * SiLU(z)) * weight, normalised within each of ngroups groups."""
        y = y * F.silu(z)
        shp = y.shape
        g = y.reshape(*shp[:-1], self.ngroups, -1)
        g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.norm_eps)
        return g.reshape(shp) * self.norm_weight

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 3 or u.shape[-1] != self.width:
            raise ValueError(f"expected (B, L, {self.width}), got {tuple(u.shape)}")
        Bsz, L, _ = u.shape
        if L > self.seq_len:
            raise ValueError(f"sequence length {L} > seq_len {self.seq_len}")
        H, P, G, N = self.nheads, self.headdim, self.ngroups, self.d_state

        z, xBC, dt = torch.split(
            self.in_proj(u), [self.d_inner, self.d_inner + 2 * G * N, H], dim=-1)
        # causal conv: left-pad d_conv-1 (Conv1d pads both sides; keep the first L outputs)
        xBC = F.silu(self.conv1d(xBC.transpose(1, 2))[..., :L].transpose(1, 2))
        x, Bm, Cm = torch.split(xBC, [self.d_inner, G * N, G * N], dim=-1)
        x = x.reshape(Bsz, L, H, P)
        Bm = Bm.reshape(Bsz, L, G, N)
        Cm = Cm.reshape(Bsz, L, G, N)
        A = -torch.exp(self.A_log)

        if self._use_fast(u):
            self.backend = "ssd=mamba_ssm"
            # softplus(dt + dt_bias) and the D skip are fused into the kernel.
            y = mamba_chunk_scan_combined(
                x.contiguous(), dt.contiguous(), A.float(), Bm.contiguous(), Cm.contiguous(),
                self.chunk_size, D=self.D.float(), z=None, dt_bias=self.dt_bias.float(),
                dt_softplus=True)
        else:
            self.backend = "ssd=torch"
            dt = F.softplus(dt + self.dt_bias)                       # (B, L, H)
            y = ssd_chunked(x, dt, A, Bm, Cm, self.chunk_size)
            y = y + x * self.D[:, None]

        y = self.gated_rmsnorm(y.reshape(Bsz, L, self.d_inner), z)
        return self.out_proj(y)

    def extra_repr(self) -> str:
        return (f"width={self.width}, seq_len={self.seq_len}, d_inner={self.d_inner}, "
                f"nheads={self.nheads}, headdim={self.headdim}, ngroups={self.ngroups}, "
                f"d_state={self.d_state}, chunk_size={self.chunk_size}, backend={self.backend!r}")
