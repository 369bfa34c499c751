"""Multi-head causal self-attention with RoPE or ALiBi, optional sliding window and logit softcap.

Paths (the one used is in ``self.backend``):
  * ``flash_attn``: flash-attn's kernel, on CUDA when importable (RoPE/none, window; softcap too);
  * ``local``: sliding-window attention computed block by block (:func:`local_attention`): each
    block of ``window`` queries scores only its own and the previous block of keys, so time and
    memory grow as L x window instead of L^2; handles the logit softcap and ALiBi; used for a window
    shorter than half the sequence when flash-attn is not there (``blocked="auto"``);
  * ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (causal or with a window mask);
  * ``math``: explicit softmax(QK^T/sqrt(d) [+ bias]) V, needed for the logit softcap without a
    window (softcap * tanh(scores / softcap), paper section IV uses 50) and used as the test reference.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def rope_cache(seq_len: int, head_dim: int, base: float, dtype, device):
    half = head_dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, half, dtype=torch.float64, device=device) / half))
    t = torch.arange(seq_len, dtype=torch.float64, device=device)
    ang = torch.outer(t, inv_freq)  # (L, half)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i+half}) of x (B, H, L, Dh) by position-dependent angles."""
    half = cos.shape[-1]
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, rest], dim=-1)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Geometric slopes of Press et al. (2022), extended for non-powers of two."""
    def pow2(n):
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        s = pow2(num_heads)
    else:
        c = 2 ** math.floor(math.log2(num_heads))
        s = pow2(c) + pow2(2 * c)[0::2][: num_heads - c]
    return torch.tensor(s, dtype=torch.float64)


def _allowed(i: torch.Tensor, j: torch.Tensor, window: int | None) -> torch.Tensor:
    """True where query position i may attend key position j: j <= i and i - j < window."""
    allowed = j <= i
    if window:
        allowed = allowed & (i - j < window)
    return allowed


def _scores(q, k, softcap=None):
    """Scaled dot products q k^T / sqrt(Dh), logit-capped as softcap * tanh(. / softcap)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return softcap * torch.tanh(scores / softcap) if softcap else scores


def attention_mask(L: int, window: int | None, device) -> torch.Tensor:
    """Boolean (L, L) mask, True where query i may attend key j: j <= i and i - j < window."""
    pos = torch.arange(L, device=device)
    return _allowed(pos[:, None], pos[None, :], window)


def reference_attention(q, k, v, window=None, softcap=None, bias=None):
    """Explicit softmax attention (B, H, L, Dh) -> (B, H, L, Dh)."""
    L = q.shape[-2]
    scores = _scores(q, k, softcap)
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill(~attention_mask(L, window, q.device), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def local_attention(q, k, v, window: int, softcap=None, slopes=None):
    """Causal sliding-window attention (B, H, L, Dh) -> (B, H, L, Dh), query i seeing keys
    i - window < j <= i, equal to :func:`reference_attention` with that window (and softcap, and the
    ALiBi bias ``slopes[h] * (j - i)`` when ``slopes`` is given), in O(L x window) time and memory.

    The sequence is cut into blocks of ``window`` positions; the keys any query of block b may see
    lie in blocks b - 1 and b, so each block scores a (window x 2 window) tile."""
    B, H, L, D = q.shape
    w = int(window)
    nb = -(-L // w)
    pad = nb * w - L
    qb = F.pad(q, (0, 0, 0, pad)).view(B, H, nb, w, D)
    # keys/values with one block of zeros in front: block b's tile is rows [b w, b w + 2 w) of these
    kp, vp = F.pad(k, (0, 0, w, pad)), F.pad(v, (0, 0, w, pad))
    kb = kp.unfold(2, 2 * w, w).transpose(-1, -2)  # (B, H, nb, 2w, D)
    vb = vp.unfold(2, 2 * w, w).transpose(-1, -2)
    scores = _scores(qb, kb, softcap)  # (B, H, nb, w, 2w)
    blk = torch.arange(nb, device=q.device)[:, None, None]
    qpos = blk * w + torch.arange(w, device=q.device)[None, :, None]  # (nb, w, 1)
    kpos = blk * w - w + torch.arange(2 * w, device=q.device)[None, None, :]  # (nb, 1, 2w)
    if slopes is not None:
        scores = scores + slopes.to(scores.dtype)[:, None, None, None] * (kpos - qpos).to(scores.dtype)
    allowed = _allowed(qpos, kpos, w) & (kpos >= 0)
    scores = scores.masked_fill(~allowed, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ vb  # (B, H, nb, w, D)
    return y.reshape(B, H, nb * w, D)[:, :, :L]


def _flash_attn():
    try:
        from flash_attn import flash_attn_func  # type: ignore
    except ImportError:
        return None
    return flash_attn_func


class Attention(nn.Module):
    def __init__(
        self,
        width: int,
        seq_len: int,
        num_heads: int = 8,
        position: str = "rope",  # rope | alibi | none
        rope_base: float = 10000.0,
        window: float | int | None = None,  # int: tokens; float in (0, 1]: fraction of seq_len
        softcap: float | None = None,
        use_flash_attn: bool = True,
        bias: bool = False,
        blocked: bool | str = "auto",  # sliding window block by block: auto (window < L/2), true, false
    ):
        super().__init__()
        if position not in ("rope", "alibi", "none"):
            raise ValueError(f"unknown position scheme {position!r}; valid: rope, alibi, none")
        # Heads must divide the width and (for RoPE) leave head_dim >= 2; narrow layers (e.g. the
        # width-8 associative-recall models) get the largest head count that fits.
        heads = max(1, min(num_heads, width))
        while heads > 1 and (width % heads or (position == "rope" and width // heads < 2)):
            heads -= 1
        self.num_heads, self.head_dim = heads, width // heads
        self.width, self.seq_len = width, seq_len
        self.position, self.rope_base = position, rope_base
        if isinstance(window, float) and 0 < window <= 1:
            window = max(1, int(round(window * seq_len)))
        self.window = int(window) if window else None
        self.softcap = softcap
        self.use_flash_attn = use_flash_attn
        if blocked not in (True, False, "auto"):
            raise ValueError(f"blocked must be true, false or auto, got {blocked!r}")
        self.blocked = blocked
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.out = nn.Linear(width, width, bias=bias)
        if position == "alibi":
            self.register_buffer("slopes", alibi_slopes(heads).float(), persistent=False)
        self.backend = "attention=sdpa"

    def _qkv(self, x):
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.position == "rope":
            cos, sin = rope_cache(L, self.head_dim, self.rope_base, x.dtype, x.device)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def _alibi_bias(self, L, dtype, device):
        if self.position != "alibi":
            return None
        pos = torch.arange(L, device=device)
        dist = (pos[None, :] - pos[:, None]).to(dtype)  # j - i (<= 0 where allowed)
        return self.slopes.to(dtype)[:, None, None] * dist[None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.width:
            raise ValueError(f"Attention expects (batch, length, {self.width}), got {tuple(x.shape)}")
        B, L, _ = x.shape
        if L > self.seq_len:  # the window and the position tables were sized for seq_len
            raise ValueError(f"Attention was built for seq_len={self.seq_len}; got length {L}")
        q, k, v = self._qkv(x)
        flash = _flash_attn() if (self.use_flash_attn and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)) else None
        if flash is not None and self.position != "alibi":
            self.backend = "attention=flash_attn"
            win = (self.window - 1, 0) if self.window else (-1, -1)
            y = flash(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True,
                      window_size=win, softcap=self.softcap or 0.0).transpose(1, 2)
        elif self.window and (self.blocked is True or (self.blocked == "auto" and 2 * self.window < L)):
            self.backend = "attention=local"
            y = local_attention(q, k, v, min(self.window, L), self.softcap,
                                self.slopes if self.position == "alibi" else None)
        elif self.softcap:
            self.backend = "attention=math"
            y = reference_attention(q, k, v, self.window, self.softcap, self._alibi_bias(L, x.dtype, x.device))
        elif self.window is None and self.position != "alibi":
            self.backend = "attention=sdpa"
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            self.backend = "attention=sdpa"
            mask = attention_mask(L, self.window, x.device)
            bias = self._alibi_bias(L, x.dtype, x.device)
            if bias is not None:
                mask = torch.zeros(L, L, dtype=x.dtype, device=x.device).masked_fill(~mask, float("-inf")) + bias
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(B, L, self.width))
