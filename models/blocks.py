"""Shared pieces of every backbone: RMSNorm, MLPs and a causal top-k mixture of experts."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(kind: str, width: int) -> nn.Module:
    if kind == "rmsnorm":
        return RMSNorm(width)
    if kind == "layernorm":
        return nn.LayerNorm(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: rmsnorm, layernorm, none")


class MLP(nn.Module):
    """``relu``: W2 relu(W1 x). ``swiglu``/``gated``: W2 (silu(W1 x) * W3 x) (Shazeer 2020)."""

    KINDS = ("relu", "gelu", "swiglu")

    def __init__(self, width: int, hidden: int, kind: str = "relu", bias: bool = True):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown mlp {kind!r}; valid: {', '.join(self.KINDS)}, none")
        self.kind = kind
        self.up = nn.Linear(width, hidden, bias=bias)
        self.gate = nn.Linear(width, hidden, bias=bias) if kind == "swiglu" else None
        self.down = nn.Linear(hidden, width, bias=bias)

    def forward(self, x):
        h = self.up(x)
        if self.kind == "relu":
            h = F.relu(h)
        elif self.kind == "gelu":
            h = F.gelu(h)
        else:
            h = F.silu(self.gate(x)) * h
        return self.down(h)


class MoE(nn.Module):
    """Top-k mixture of gated-MLP (SwiGLU) experts with a learned softmax router.

    Routing is per token and there is no capacity limit, so whether a token reaches an expert
    never depends on other (in particular later) tokens: the layer stays causal. After each forward,
    ``aux_loss`` holds the Switch-Transformer load-balancing loss
    ``E * sum_e f_e * P_e`` (f_e: fraction of routed slots sent to e; P_e: mean router probability).
    """

    def __init__(self, width: int, hidden: int, num_experts: int = 4, top_k: int = 2, kind: str = "swiglu"):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"need 1 <= top_k <= num_experts, got {top_k}, {num_experts}")
        self.num_experts, self.top_k = num_experts, top_k
        self.router = nn.Linear(width, num_experts, bias=False)
        self.experts = nn.ModuleList(MLP(width, hidden, kind, bias=False) for _ in range(num_experts))
        self.aux_loss = torch.zeros(())

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs = torch.softmax(self.router(x).float(), dim=-1)  # (T, E)
        w, idx = probs.topk(self.top_k, dim=-1)  # (T, k)
        w = (w / w.sum(-1, keepdim=True)).to(x.dtype)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel():
                y.index_add_(0, tok, expert(x[tok]) * w[tok, slot, None])
        frac = torch.bincount(idx.flatten(), minlength=self.num_experts).to(probs.dtype) / idx.numel()
        self.aux_loss = self.num_experts * (frac * probs.mean(0)).sum()
        return y.reshape(shape)
