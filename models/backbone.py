r"""The one backbone every registered model uses (configs in ``conf/model/``).

    token ids --Embedding--\                                         /--LM head (tied)--> logits
                            >-- h0 --[Block] x depth -- final norm --<
    features  --Linear-----/                                         \--Linear--> outputs

    Block:  h = h + mixer(norm(h));  h = h + mlp_or_moe(norm(h))   (pre-norm residual, sec. IV)

``mixers`` is a per-layer list, cycled over ``depth``: ``[stu_t, attention]`` alternates the two
(the Flash STU hybrid of section IV). Entries are names of ``conf/mixer/<name>.yaml`` or a dotted
import path to a mixer class. ``mixer_options`` maps a mixer name to overrides of its config.

``residual=False, norm="none", mlp="none", final_norm=False`` gives the paper's LDS model: input
projection, one mixer, output projection, nothing else. ``global_skip=True`` (appendix C, robotics)
adds the embedded input h0 to the output of every block. ``block_skip=True`` (the STU block of the
paper authors' robotics code, windsornguyen/spectral_ssm ``models/stu/model.py``) adds each block's
input to its output once more: ``Block(h) = h + [h + mixer(norm(h)) + mlp(...)]``.

Language-model options (section IV; all off by default): ``mlp_mixers`` names the mixers whose
blocks have the MLP/MoE (the Mamba-2 hybrid: Mamba-2 blocks have none, attention blocks do);
``mlp_bias=False`` drops the MLP biases (Table XI "Bias: No"); ``vocab_multiple=64`` rounds the
embedding/head rows up to a multiple of 64 (NanoGPT's rounding, section IV): the extra rows are
parameters (counted, as the paper counts them) that no token uses, and the logits are those of the
``vocab_size`` real ids only (NanoGPT also computes logits for the padding ids, which its softmax
then learns to push down); ``embed_init_std`` draws the token embedding (the head too, when tied)
from N(0, std^2) instead of nn.Embedding's N(0, 1) (the authors' LM code: std = width^-0.5).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from models.blocks import MLP, MoE, make_norm


class Block(nn.Module):
    def __init__(self, mixer: nn.Module, width: int, *, norm: str, mlp: str, mlp_hidden: int, moe: bool,
                 num_experts: int, top_k: int, residual: bool, block_skip: bool = False, mlp_bias: bool = True):
        super().__init__()
        self.residual, self.block_skip = residual, block_skip
        self.norm1 = make_norm(norm, width)
        self.mixer = mixer
        if moe:
            self.norm2, self.ff = make_norm(norm, width), MoE(width, mlp_hidden, num_experts, top_k)
        elif mlp != "none":
            self.norm2, self.ff = make_norm(norm, width), MLP(width, mlp_hidden, mlp, bias=mlp_bias)
        else:
            self.norm2, self.ff = None, None

    def forward(self, h):
        z = h
        m = self.mixer(self.norm1(h))
        h = h + m if self.residual else m
        if self.ff is not None:
            f = self.ff(self.norm2(h))
            h = h + f if self.residual else f
        return h + z if self.block_skip else h


class SequenceModel(nn.Module):
    def __init__(
        self,
        *,
        seq_len: int,
        d_in: int | None = None,
        d_out: int | None = None,
        vocab_size: int | None = None,
        width: int = 32,
        depth: int = 2,
        mixers: Sequence[str] = ("stu",),
        mixer_options: dict[str, dict[str, Any]] | None = None,
        mlp: str = "relu",
        mlp_scale: float = 4,
        mlp_hidden: int | None = None,
        moe: bool = False,
        num_experts: int = 4,
        top_k: int = 2,
        moe_aux_weight: float = 0.01,
        norm: str = "rmsnorm",
        final_norm: bool = True,
        residual: bool = True,
        global_skip: bool = False,
        block_skip: bool = False,
        tie_embeddings: bool = False,
        mlp_mixers: Sequence[str] | None = None,
        mlp_bias: bool = True,
        vocab_multiple: int = 1,
        embed_init_std: float | None = None,
    ):
        super().__init__()
        from models import build_mixer  # late import: the registry imports this module

        if vocab_size is None and (d_in is None or d_out is None):
            raise ValueError("give vocab_size (token input) or both d_in and d_out (continuous input)")
        self.tokens = vocab_size is not None
        self.seq_len, self.width, self.depth = seq_len, width, depth
        self.moe_aux_weight = moe_aux_weight
        self.global_skip = global_skip
        mixers = [mixers] if isinstance(mixers, str) else list(mixers)
        if not mixers:
            raise ValueError("mixers must name at least one mixer")
        self.mixer_names = [mixers[i % len(mixers)] for i in range(depth)]
        options = dict(mixer_options or {})
        unknown = sorted(set(options) - set(mixers))
        if unknown:
            raise ValueError(f"mixer_options for {unknown}, which are not in mixers {mixers}")
        if mlp_mixers is not None:
            mlp_mixers = [mlp_mixers] if isinstance(mlp_mixers, str) else list(mlp_mixers)
            unknown = sorted(set(mlp_mixers) - set(mixers))
            if unknown:
                raise ValueError(f"mlp_mixers names {unknown}, which are not in mixers {mixers}")
        if int(vocab_multiple) < 1:
            raise ValueError(f"vocab_multiple must be >= 1, got {vocab_multiple}")
        self.vocab_size = vocab_size
        self.padded_vocab = -(-vocab_size // int(vocab_multiple)) * int(vocab_multiple) if self.tokens else None

        if self.tokens:
            self.embed = nn.Embedding(self.padded_vocab, width)
            if embed_init_std is not None:
                nn.init.normal_(self.embed.weight, std=float(embed_init_std))
        else:
            self.embed = nn.Linear(d_in, width)
        hidden = int(mlp_hidden) if mlp_hidden else max(1, int(round(mlp_scale * width)))

        def has_ff(name):
            return mlp_mixers is None or name in mlp_mixers

        self.blocks = nn.ModuleList(
            Block(build_mixer(name, width=width, seq_len=seq_len, **options.get(name, {})), width,
                  norm=norm, mlp=mlp if has_ff(name) else "none", mlp_hidden=hidden,
                  moe=moe and has_ff(name), num_experts=num_experts, top_k=top_k, residual=residual,
                  block_skip=block_skip, mlp_bias=mlp_bias)
            for name in self.mixer_names
        )
        self.norm = make_norm(norm if final_norm else "none", width)
        if self.tokens:
            self.head = nn.Linear(width, self.padded_vocab, bias=False)
            if tie_embeddings:
                self.head.weight = self.embed.weight
        else:
            self.head = nn.Linear(width, d_out)

    @property
    def aux_loss(self) -> torch.Tensor:
        """Weighted MoE load-balancing loss of the last forward (0 without MoE)."""
        losses = [m.aux_loss for m in self.modules() if isinstance(m, MoE)]
        if not losses:
            return torch.zeros(())
        return self.moe_aux_weight * torch.stack(losses).sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"token model expects int ids (batch, length), got {tuple(x.shape)} {x.dtype}")
        elif x.dim() != 3 or x.shape[-1] != self.embed.in_features:
            raise ValueError(f"model expects (batch, length, {self.embed.in_features}), got {tuple(x.shape)}")
        if x.shape[1] > self.seq_len:
            raise ValueError(f"model was built for seq_len={self.seq_len}; got length {x.shape[1]}")
        h0 = h = self.embed(x)
        for block in self.blocks:
            h = block(h)
            if self.global_skip:
                h = h + h0
        if self.tokens and self.padded_vocab != self.vocab_size:  # logits of the real ids only
            return nn.functional.linear(self.norm(h), self.head.weight[: self.vocab_size])
        return self.head(self.norm(h))
