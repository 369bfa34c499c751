"""Learning a random linear dynamical system (paper section II-A, Fig. 2).

System (paper eq. in section I-A)::

    x_{t+1} = A x_t + B u_t + w_t,        w_t    ~ N(0, noise_w^2 I)
    y_{t+1} = C x_{t+1} (+ D u_t) + zeta,  zeta  ~ N(0, noise_zeta^2 I)

Choices (the paper gives d_in = d_out = 5, d_hidden = 256, symmetric A with rho(A) = 0.99,
context 100, RMSProp, 5,000 steps, 16 trials; everything else below is ours):

* **System draw** (:func:`make_system`, float64, its own ``torch.Generator`` seeded with
  ``system_seed``): ``M`` has i.i.d. N(0, 1) entries, ``A = (M + M^T) / 2`` rescaled so that its
  spectral radius is exactly ``rho`` (checked to 1e-6). ``B`` (d_hidden x d_in) ~ N(0, 1/d_in),
  ``C`` (d_out x d_hidden) ~ N(0, 1/d_hidden), ``D`` (d_out x d_in) ~ N(0, 1/d_in) used only when
  ``use_d`` (default off: the paper expands the system with D = 0). ``D`` is always drawn, so
  toggling ``use_d`` leaves A, B, C unchanged. One system per trial: the runner passes the trial seed
  as ``system_seed``; every batch of that trial comes from the same system.
* **Inputs**: u_t i.i.d. standard Gaussian, shape (B, L, d_in); start state x_0 = 0 (no burn-in).
* **Alignment** (0-indexed positions t = 0..L-1): the input at position t is u_t and the target at
  position t is y_{t+1} = C x_{t+1}, which depends on u_0..u_t only, so it is a causal function of
  what the model has seen (this is the paper's ``||y_hat_{t+1} - y_{t+1}||^2``, Fig. 2). With
  ``use_d`` the feed-through term is ``D u_t`` (the newest visible input) rather than the paper's
  ``D u_{t+1}``, which the model could not see. (The paper's expansion y_t = sum_i C A^i B u_{t-i} is
  off by one power of A for this recursion; ours is y_{t+1} = sum_{k=0}^{t} C A^k B u_{t-k}.)
* **Noise**: ``noise_w`` is process noise added to the state update (it propagates through A),
  ``noise_zeta`` is observation noise added to the target. Both default to 0 (noiseless, as the
  paper's experiment). Noise is drawn from the batch generator after the inputs, so turning it on
  does not change u.
* **Precision / speed**: simulated in float64, returned as float32. The noise-free map from inputs
  to targets is precomputed once per system as a block-Toeplitz matrix of Markov parameters
  C A^k B (via A's eigendecomposition, exact for symmetric A), so a batch costs one matmul; with
  process noise the state recursion runs in A's eigenbasis.
* **Scoring**: every position is scored (mask all True); loss and metric are the per-position
  squared error summed over the 5 outputs and averaged over positions (the paper's
  ``||y_hat - y||^2``).
* **Optimizer**: RMSProp as in the paper; the paper does not give the learning rate, we use 1e-3.
  Batch size (not given in the paper) 32.
"""
from __future__ import annotations

import math

import torch

from tasks.base import Batch, Task


def _check_radius(eigenvalues: torch.Tensor, rho: float) -> None:
    radius = float(eigenvalues.abs().max())
    if abs(radius - rho) > 1e-6:
        raise RuntimeError(f"spectral radius {radius} != {rho}")


def make_system(
    seed: int,
    d_in: int = 5,
    d_out: int = 5,
    d_hidden: int = 256,
    rho: float = 0.99,
    dtype: torch.dtype = torch.float64,
    use_d: bool = False,
    check: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random LDS ``(A, B, C, D)`` with symmetric ``A`` of spectral radius exactly ``rho``.

    Shapes: A (d_hidden, d_hidden), B (d_hidden, d_in), C (d_out, d_hidden), D (d_out, d_in).
    ``D`` is zero unless ``use_d``. ``check`` recomputes the spectrum to confirm rho(A) = rho
    (to 1e-6); :class:`LDS` skips it here and checks on its own eigendecomposition instead.
    """
    if not rho > 0:
        raise ValueError(f"rho must be positive, got {rho}")
    g = torch.Generator().manual_seed(int(seed))
    m = torch.randn(d_hidden, d_hidden, generator=g, dtype=torch.float64)
    a = (m + m.T) / 2
    a = a * (rho / torch.linalg.eigvalsh(a).abs().max())
    a = (a + a.T) / 2  # exact symmetry after rounding
    if check:
        _check_radius(torch.linalg.eigvalsh(a), rho)
    b = torch.randn(d_hidden, d_in, generator=g, dtype=torch.float64) / math.sqrt(d_in)
    c = torch.randn(d_out, d_hidden, generator=g, dtype=torch.float64) / math.sqrt(d_hidden)
    d = torch.randn(d_out, d_in, generator=g, dtype=torch.float64) / math.sqrt(d_in)
    if not use_d:
        d = torch.zeros_like(d)
    return a.to(dtype), b.to(dtype), c.to(dtype), d.to(dtype)


class LDS(Task):
    name = "lds"
    kind = "continuous"
    primary_metric = "mse"
    higher_is_better = False
    default_optimizer = {"name": "rmsprop", "lr": 1e-3}
    default_batch_size = 32
    default_steps = 5000

    def __init__(
        self,
        seq_len: int = 100,
        d_in: int = 5,
        d_out: int = 5,
        d_hidden: int = 256,
        rho: float = 0.99,
        system_seed: int = 0,
        use_d: bool = False,
        noise_w: float = 0.0,
        noise_zeta: float = 0.0,
    ):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if noise_w < 0 or noise_zeta < 0:
            raise ValueError("noise_w and noise_zeta must be >= 0")
        self.seq_len = int(seq_len)
        self.d_in = int(d_in)
        self.d_out = int(d_out)
        self.d_hidden = int(d_hidden)
        self.rho = float(rho)
        self.system_seed = int(system_seed)
        self.use_d = bool(use_d)
        self.noise_w = float(noise_w)
        self.noise_zeta = float(noise_zeta)
        self.A, self.B, self.C, self.D = make_system(
            self.system_seed, self.d_in, self.d_out, self.d_hidden, self.rho, torch.float64, self.use_d,
            check=False,
        )
        # Eigenbasis of the symmetric A: A = Q diag(lam) Q^T, so the state recursion is diagonal.
        lam, q = torch.linalg.eigh(self.A)
        _check_radius(lam, self.rho)
        self._lam = lam
        self._q = q
        self._bq = q.T @ self.B  # (H, d_in)
        self._cq = self.C @ q  # (d_out, H)
        # Noise-free input -> target map as one block-Toeplitz matrix over the whole sequence:
        # y_{t+1} = sum_{k=0}^{t} K_k u_{t-k} with K_k = C A^k B (+ D for k = 0 when use_d), so a
        # batch is a single (B, L*d_in) @ (L*d_in, L*d_out) matmul.
        L = self.seq_len
        powers = lam.unsqueeze(0) ** torch.arange(L, dtype=torch.float64).unsqueeze(1)  # (L, H)
        markov = torch.einsum("oh,kh,hi->koi", self._cq, powers, self._bq)  # (L, d_out, d_in)
        if self.use_d:
            markov[0] += self.D
        lag = torch.arange(L).unsqueeze(0) - torch.arange(L).unsqueeze(1)  # [s, t] = t - s
        blocks = markov[lag.clamp_min(0)] * (lag >= 0).to(torch.float64)[..., None, None]  # (s, t, o, i)
        self._toeplitz = blocks.permute(0, 3, 1, 2).reshape(L * self.d_in, L * self.d_out).contiguous()

    def simulate(self, u: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """Targets (before observation noise) for inputs ``u`` (B, L, d_in) float64.

        Position t holds y_{t+1} = C x_{t+1} (+ D u_t), with x_0 = 0 and
        x_{t+1} = A x_t + B u_t + w_t. ``w`` (B, L, d_hidden) is optional process noise.
        """
        bsz, L, _ = u.shape
        if w is None and L <= self.seq_len:
            n_in, n_out = L * self.d_in, L * self.d_out
            y = u.reshape(bsz, n_in) @ self._toeplitz[:n_in, :n_out]
            return y.reshape(bsz, L, self.d_out)
        # General path: the diagonal recursion in A's eigenbasis, z_t = Q^T x_{t+1}.
        drive = u @ self._bq.T  # (B, L, H)
        if w is not None:
            drive = drive + w @ self._q
        z = torch.empty_like(drive)
        state = torch.zeros_like(drive[:, 0])
        for t in range(L):
            state = self._lam * state + drive[:, t]
            z[:, t] = state
        y = z @ self._cq.T
        if self.use_d:
            y = y + u @ self.D.T
        return y

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        shape = (batch_size, self.seq_len)
        u = torch.randn(*shape, self.d_in, generator=generator, dtype=torch.float64)
        w = None
        if self.noise_w > 0:
            w = self.noise_w * torch.randn(*shape, self.d_hidden, generator=generator, dtype=torch.float64)
        y = self.simulate(u, w)
        if self.noise_zeta > 0:
            y = y + self.noise_zeta * torch.randn(*shape, self.d_out, generator=generator, dtype=torch.float64)
        mask = torch.ones(shape, dtype=torch.bool)
        return Batch(u.float(), y.float(), mask)

    def describe(self):
        out = super().describe()
        out.update(d_hidden=self.d_hidden, rho=self.rho, system_seed=self.system_seed,
                   use_d=self.use_d, noise_w=self.noise_w, noise_zeta=self.noise_zeta)
        return out
