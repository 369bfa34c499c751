"""Multi-head causal self-attention with RoPE or ALiBi, optional sliding window and logit softcap.

Paths (the one used is in ``self.backend``):
  * ``flash_attn``: flash-attn's kernel, on CUDA when importable (RoPE/none, window; softcap too);
  * ``local``: sliding-window attention in O(L x window) (:func:`local_attention`), queries in
    blocks, each block against the keys of its window only. Without the softcap
    (:func:`window_sdpa`): ONE ``scaled_dot_product_attention`` call over all blocks (keys as
    overlapping ``unfold`` views, one band mask shared by the blocks). With it
    (:func:`softcap_attention`): a block loop with a custom backward that recomputes the
    probabilities (fused elementwise passes, no L x L tensor). ALiBi in both. Used when
    ``blocked=true``, or with ``blocked="auto"`` where it was measured faster than the paths below
    (:meth:`Attention.uses_blocked`); on one CPU thread at window L/8 it takes about a third of the
    time of full causal SDPA at L = 2,048 ... 8,192, softcap or not (``benchmarks/sliding_window.py``);
  * ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (causal or with a window mask);
  * ``math``: explicit softmax(QK^T/sqrt(d) [+ bias]) V, for the logit softcap outside the local
    path (softcap * tanh(scores / softcap), paper section IV uses 50); :func:`reference_attention`
    is also the test reference of every path.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def rope_cache(seq_len: int, head_dim: int, base: float, dtype, device, scale: float = 1.0):
    """cos/sin of the RoPE angles for positions ``0..seq_len-1`` times ``scale`` (position
    interpolation, Chen et al. 2023: ``scale`` < 1 squeezes longer sequences into trained angles)."""
    half = head_dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, half, dtype=torch.float64, device=device) / half))
    t = torch.arange(seq_len, dtype=torch.float64, device=device) * float(scale)
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


# Query block sizes of the sliding-window paths (measured on one CPU thread, width 256, 8 heads, window
# L/8, L = 2,048 ... 8,192: benchmarks/sliding_window.py). A block of ``block`` queries scores a tile
# of ``block x (window + block)`` keys, so a smaller block wastes less (block / (window + block) of the
# tile is masked) but runs more, smaller operations.
SDPA_BLOCK = 128      # window_sdpa: one SDPA call over all blocks (64 and 128 measure the same; 256 is slower)
SOFTCAP_BLOCK = 64    # softcap_attention: a Python loop over blocks (32 and 128 are slower)
# softcap_attention keeps tanh(scores) of the forward for the backward (about 15-25 % faster) while it
# needs at most this many bytes; above it the backward recomputes them (memory O(L x head_dim)).
SAVE_TANH_BYTES = 512 * 2**20
# blocked="auto" (Attention.uses_blocked): the shortest sequences that take the sliding-window path
AUTO_SOFTCAP_MIN_LEN = 64
AUTO_SDPA_MIN_LEN = 256


def band_mask(block: int, window: int, dtype, device, slopes=None) -> torch.Tensor:
    """Additive mask of a sliding-window tile: the queries ``p + a`` (a < ``block``) of a block that
    starts at position p against the keys ``p - window + c`` (c < ``window + block``): 0 where
    ``a < c <= a + window`` (the key is causal and in the window), -inf elsewhere, plus the ALiBi bias
    ``slopes[h] * (c - window - a)`` (= slope x (j - i)) when ``slopes`` is given. Shape
    ``(block, window + block)``, or ``(H, block, window + block)`` with slopes."""
    a = torch.arange(block, device=device)[:, None]
    c = torch.arange(window + block, device=device)[None, :]
    keep = (c > a) & (c <= a + window)
    mask = torch.zeros(block, window + block, dtype=dtype, device=device).masked_fill(~keep, float("-inf"))
    if slopes is not None:
        mask = mask + slopes.to(device=device, dtype=dtype)[:, None, None] * (c - window - a).to(dtype)
    return mask


def window_sdpa(q, k, v, window: int, slopes=None, block: int | None = None):
    """Causal sliding-window attention without a softcap (query i sees keys i - window < j <= i, plus
    the ALiBi bias ``slopes[h] * (j - i)`` when given) through ``scaled_dot_product_attention``:
    (B, H, L, Dh) -> (B, H, L, Dh), equal to :func:`reference_attention`.

    * the first ``window`` queries see every earlier key: one causal SDPA call on that prefix;
    * the others, in blocks of ``block`` queries starting at p, see keys [p - window, p + block): one
      SDPA call over all blocks at once, the blocks as a batch dimension, the keys and values as
      overlapping windows (``unfold``: a view, no gather), and one ``(block, window + block)`` band
      mask shared by every block (:func:`band_mask`).

    Work and memory grow as L x (window + block) instead of L^2."""
    B, H, L, D = q.shape
    w = min(int(window), L)
    head = (q[:, :, :w], k[:, :, :w], v[:, :, :w])
    if slopes is None:
        y0 = F.scaled_dot_product_attention(*head, is_causal=True)
    else:  # the prefix's causal mask with the ALiBi bias: a window of w over w positions
        y0 = F.scaled_dot_product_attention(*head, attn_mask=band_mask(w, w, q.dtype, q.device, slopes)[..., w:])
    n = L - w
    if n <= 0:
        return y0
    s = min(int(block or SDPA_BLOCK), w)
    nb = -(-n // s)
    pad = nb * s - n  # queries past the end are computed and dropped; keys past the end are masked
    qb = F.pad(q[:, :, w:], (0, 0, 0, pad)).view(B * H, nb, s, D)
    kb, vb = (F.pad(t, (0, 0, 0, pad)).unfold(2, w + s, s).transpose(-1, -2).flatten(0, 1) for t in (k, v))
    if slopes is None:
        mask = band_mask(s, w, q.dtype, q.device) == 0  # boolean: measured as fast as the additive form
    else:
        mask = band_mask(s, w, q.dtype, q.device, slopes)[:, None].repeat(B, 1, 1, 1)  # (B*H, 1, s, w + s)
    y = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask)  # (B*H, nb, s, D)
    return torch.cat([y0, y.view(B, H, nb * s, D)[:, :, :n]], dim=2)


def _tile(buf: torch.Tensor, *shape: int) -> torch.Tensor:
    """A contiguous tensor of ``shape`` at the start of the flat workspace ``buf``."""
    return buf[: math.prod(shape)].view(shape)


# tanh(x) = expm1(2x) / (expm1(2x) + 2): as accurate as torch.tanh and about 1.5x faster on CPU in
# float32/float64 (torch.tanh was the slowest elementwise pass of the softcap path; the faster
# 2 sigmoid(2x) - 1 loses float32 precision near 0 and was not used). |x| is clamped at
# a point where tanh rounds to +-1 already, so that expm1 cannot overflow. Other dtypes use torch.tanh.
_TANH_CLAMP = {torch.float32: 10.0, torch.float64: 20.0}


def _softcap_tanh_(x: torch.Tensor, twice: bool, scratch: torch.Tensor) -> torch.Tensor:
    """x <- tanh(x / 2) when ``twice`` (the expm1 form; x holds twice the argument) else tanh(x)."""
    if not twice:
        return x.tanh_()
    lim = 2 * _TANH_CLAMP[x.dtype]
    x.clamp_(-lim, lim).expm1_()
    torch.add(x, 2.0, out=scratch)
    return x.div_(scratch)


class _SoftcapAttention(torch.autograd.Function):
    """softmax(softcap * tanh(q k^T / (sqrt(Dh) softcap)) + mask) v, query block by query block, on
    (B*H, L, Dh) tensors; the backward recomputes each block's probabilities (flash-attention style),
    so no (L x window) tensor is kept except tanh(scores) while they fit in ``SAVE_TANH_BYTES``.

    Per block of queries [q0, q1) the keys are [max(0, q0 - window), q1) and the additive mask is the
    matching slice of ``mask`` (:func:`band_mask`: window, causality, ALiBi). Elementwise passes are
    fused where torch allows (one addcdiv for cap * tanh + mask, softmax in place into preallocated
    tiles, matmuls into preallocated outputs), which is what makes this faster than the explicit
    formula: its cost is the matmuls and the tanh/exp passes."""

    @staticmethod
    def forward(ctx, q, k, v, window, cap, block, mask, for_backward):
        BH, L, D = q.shape
        w, s = window, block
        twice = q.dtype in _TANH_CLAMP
        qs = q * ((2.0 if twice else 1.0) / (math.sqrt(D) * cap))
        # keep the tanh tiles for the backward (at most this many bytes) or recompute them there
        save = for_backward and BH * L * (w + s) * q.element_size() <= SAVE_TANH_BYTES
        o = torch.empty_like(q)
        work = q.new_empty(2, BH * s * (w + s))
        out = q.new_empty(BH * s * D)
        tanhs = []
        for q0 in range(0, L, s):
            q1, k0 = min(q0 + s, L), max(0, q0 - w)
            r, n, c0 = q1 - q0, q1 - k0, k0 - q0 + w
            x = torch.empty(BH, r, n, dtype=q.dtype, device=q.device) if save else _tile(work[0], BH, r, n)
            scores = _tile(work[1], BH, r, n)
            torch.bmm(qs[:, q0:q1], k[:, k0:q1].transpose(1, 2), out=x)
            if save:  # keep tanh for the backward
                tanhs.append(_softcap_tanh_(x, twice, scores))
                torch.add(mask[:, :r, c0:c0 + n], x, alpha=cap, out=scores)
            elif twice:  # cap * expm1 / (expm1 + 2) + mask in one pass
                x.clamp_(-2 * _TANH_CLAMP[q.dtype], 2 * _TANH_CLAMP[q.dtype]).expm1_()
                torch.add(x, 2.0, out=scores)
                torch.addcdiv(mask[:, :r, c0:c0 + n], x, scores, value=cap, out=scores)
            else:
                torch.add(mask[:, :r, c0:c0 + n], x.tanh_(), alpha=cap, out=scores)
            torch.ops.aten._softmax.out(scores, -1, False, out=scores)
            y = _tile(out, BH, r, D)
            torch.bmm(scores, v[:, k0:q1], out=y)
            o[:, q0:q1] = y
        ctx.save_for_backward(q, k, v, o, mask)
        ctx.tanhs = tanhs
        ctx.args = (w, cap, s, twice)
        return o

    @staticmethod
    def backward(ctx, grad):
        q, k, v, o, mask = ctx.saved_tensors
        w, cap, s, twice = ctx.args
        tanhs, ctx.tanhs = ctx.tanhs, None
        BH, L, D = q.shape
        with torch.autocast(q.device.type, enabled=False):
            grad = grad.to(q.dtype).contiguous()
            delta = (grad * o).sum(-1, keepdim=True)  # rowsum(dO * O) of the softmax backward
            qs = q * ((2.0 if twice else 1.0) / (math.sqrt(D) * cap))
            dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
            work = q.new_empty(3, BH * s * (w + s))
            out = q.new_empty(BH * (w + s) * D)
            for i, q0 in enumerate(range(0, L, s)):
                q1, k0 = min(q0 + s, L), max(0, q0 - w)
                r, n, c0 = q1 - q0, q1 - k0, k0 - q0 + w
                kc, vc, gc = k[:, k0:q1], v[:, k0:q1], grad[:, q0:q1]
                p, dp = _tile(work[1], BH, r, n), _tile(work[2], BH, r, n)
                if tanhs:
                    t, tanhs[i] = tanhs[i], None
                else:
                    t = _tile(work[0], BH, r, n)
                    torch.bmm(qs[:, q0:q1], kc.transpose(1, 2), out=t)
                    _softcap_tanh_(t, twice, p)
                torch.add(mask[:, :r, c0:c0 + n], t, alpha=cap, out=p)
                torch.ops.aten._softmax.out(p, -1, False, out=p)  # the block's probabilities
                acc = _tile(out, BH, n, D)
                dv[:, k0:q1] += torch.bmm(p.transpose(1, 2), gc, out=acc)
                torch.bmm(gc, vc.transpose(1, 2), out=dp)
                dp.sub_(delta[:, q0:q1]).mul_(p)  # d(capped scores) = P (dP - delta)
                dp.addcmul_(dp, t.mul_(t), value=-1.0)  # x (1 - tanh^2): d(q k^T) up to 1/sqrt(Dh)
                dq[:, q0:q1] = torch.bmm(dp, kc, out=_tile(out, BH, r, D))
                dk[:, k0:q1] += torch.bmm(dp.transpose(1, 2), q[:, q0:q1], out=_tile(out, BH, n, D))
            scale = 1.0 / math.sqrt(D)
            return dq.mul_(scale), dk.mul_(scale), dv, None, None, None, None, None


def softcap_attention(q, k, v, window: int | None, softcap: float, slopes=None, block: int | None = None):
    """Causal attention with the logit softcap (softcap * tanh(scores / softcap)), within a sliding
    window when ``window`` < L (else full causal), with the ALiBi bias when ``slopes`` is given:
    (B, H, L, Dh) -> (B, H, L, Dh), equal to :func:`reference_attention`, block by block
    (:class:`_SoftcapAttention`) in O(L x (window + block)) time. Under autocast it computes in the
    autocast dtype (as SDPA does)."""
    B, H, L, D = q.shape
    w = min(int(window), L) if window else L
    s = int(block or SOFTCAP_BLOCK)
    dev = q.device.type
    dtype = (torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev)
             else torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype))
    mask = band_mask(s, w, dtype, q.device, slopes)
    mask = mask[None] if slopes is None else mask.repeat(B, 1, 1)
    flat = [t.to(dtype).reshape(B * H, L, D) for t in (q, k, v)]
    for_backward = torch.is_grad_enabled() and any(t.requires_grad for t in flat)
    with torch.autocast(dev, enabled=False):
        y = _SoftcapAttention.apply(*flat, w, float(softcap), s, mask, for_backward)
    return y.view(B, H, L, D)


def local_attention(q, k, v, window: int, softcap=None, slopes=None, block: int | None = None):
    """Causal sliding-window attention (B, H, L, Dh) -> (B, H, L, Dh), query i seeing keys
    i - window < j <= i, equal to :func:`reference_attention` with that window (and softcap, and the
    ALiBi bias ``slopes[h] * (j - i)`` when ``slopes`` is given), in O(L x window) time and memory:
    :func:`window_sdpa` without a softcap, :func:`softcap_attention` with one."""
    if softcap:
        return softcap_attention(q, k, v, window, softcap, slopes, block)
    return window_sdpa(q, k, v, window, slopes, block)


def _functorch_active(t: torch.Tensor) -> bool:
    """True inside a functorch transform (``torch.func.vmap`` of the batched trials): the custom
    autograd function of the softcap path has no vmap rule, so the explicit formula is used there."""
    try:
        return bool(torch._C._functorch.is_batchedtensor(t)) or torch._C._are_functorch_transforms_active()
    except AttributeError:  # pragma: no cover (older torch)
        return False


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
        blocked: bool | str = "auto",  # sliding window block by block: auto (when faster: uses_blocked), true, false
        interpolation_factor: float = 1.0,  # position interpolation: RoPE positions / ALiBi slopes x factor (section IV: 0.25)
    ):
        super().__init__()
        if not float(interpolation_factor) > 0:
            raise ValueError(f"interpolation_factor must be > 0, got {interpolation_factor}")
        self.interpolation_factor = float(interpolation_factor)
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
            # the authors' LM code multiplies the ALiBi slopes by its interpolation factor
            self.register_buffer("slopes", alibi_slopes(heads).float() * self.interpolation_factor, persistent=False)
        self.backend = "attention=sdpa"

    def _qkv(self, x):
        B, L, _ = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.position == "rope":
            cos, sin = rope_cache(L, self.head_dim, self.rope_base, x.dtype, x.device, self.interpolation_factor)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def _alibi_bias(self, L, dtype, device):
        if self.position != "alibi":
            return None
        pos = torch.arange(L, device=device)
        dist = (pos[None, :] - pos[:, None]).to(dtype)  # j - i (<= 0 where allowed)
        return self.slopes.to(dtype)[:, None, None] * dist[None]

    def uses_blocked(self, L: int) -> bool:
        """Whether a length-L input takes the sliding-window path (``attention=local``) when flash-attn
        does not run: always with ``blocked=true`` (any window, also >= L), never with ``false``; with
        ``auto`` where it was measured faster than the alternative, for a window < L (fwd+bwd on one
        CPU thread; batch 1-32, 4-8 heads of 4-32 dims, L = 33 ... 1,024, windows L/8 ... L - 1; and
        L = 1,024 ... 8,192 at window L/8 in benchmarks/sliding_window.py):

        * with the softcap the alternative is the explicit formula (L x L scores, several elementwise
          passes): the block path took 0.06-0.93 of its time at every L >= 64 and every window, 1.4-1.6x
          at L = 33 (the fixed costs of its block loop);
        * without it the alternative is SDPA with an L x L window mask, which computes all L^2 scores;
          the block path computes L x (window + block) of them, at the cost of two SDPA calls and a few
          copies: 0.29-0.77 of the time where window + block <= 3L/4 and L >= 256; 0.83-1.09 at
          L <= 128 and up to 3.5x for windows near L, where SDPA with the mask is kept (a conservative
          rule: some wider windows at L >= 512 were faster too, 0.69-0.86)."""
        if not self.window or self.blocked is False:
            return False
        if self.blocked is True:
            return True
        if self.window >= L:
            return False
        if self.softcap:
            return L >= AUTO_SOFTCAP_MIN_LEN
        return L >= AUTO_SDPA_MIN_LEN and self.window + min(self.window, SDPA_BLOCK) <= 0.75 * L

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
        elif self.uses_blocked(L) and not (self.softcap and _functorch_active(q)):
            self.backend = "attention=local"
            y = local_attention(q, k, v, min(self.window, L), self.softcap,
                                self.slopes if self.position == "alibi" else None)
        elif (self.softcap and (self.window is None or self.window >= L) and self.blocked != False  # noqa: E712
              and L >= AUTO_SOFTCAP_MIN_LEN and not _functorch_active(q)):
            # full causal attention with the softcap: the block loop is exact and was measured 4-7x
            # faster than the explicit formula at L >= 64 (benchmarks/sliding_window.py)
            self.backend = "attention=local"
            y = softcap_attention(q, k, v, None, self.softcap, self.slopes if self.position == "alibi" else None)
        elif self.softcap:
            self.backend = "attention=math"
            y = reference_attention(q, k, v, self.window, self.softcap, self._alibi_bias(L, x.dtype, x.device))
        elif (self.window is None or self.window >= L) and self.position != "alibi":  # a window >= L is causal
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
