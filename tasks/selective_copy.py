"""Selective copy (paper appendix B, Fig. 14): repeat the scattered non-blank tokens in order.

Paper: "recall (in order) a sequence of a fixed number of tokens, which are sampled uniformly from a
vocabulary and distributed randomly throughout the context of otherwise blank tokens"; "sequence
length of 128 tokens with a vocabulary of 10 tokens"; width 32, tuned Adam (lr 0.0024, appendix B).
The paper does not state how many tokens are copied; we default to ``num_copy = 16`` as in the Mamba
paper's selective copying task (Gu & Dao 2023), which this task follows ([51] in the paper).

Token ids (``vocab_size = num_tokens + 2 = 12`` for the model):

* ``0 .. num_tokens-1``: content tokens (``num_tokens = 10``),
* ``num_tokens`` (10): blank,
* ``num_tokens + 1`` (11): marker ("now copy").

Layout of one sequence, total length L = ``seq_len`` = 128 (inputs and targets both length L),
with N = ``num_copy`` and C = L - N = 112 context positions (the S4/Mamba "copying, variable"
form: N tokens among C positions, then N markers)::

    position:  0 ............................ C-1 | C ..... L-1
    input:     N content tokens at N distinct     | N markers
               uniformly random positions, blanks |
               elsewhere (order = position order) |
    target:    (blank, unscored)                  | the N content tokens in order

* Content tokens are i.i.d. uniform (repeats allowed); positions uniform without replacement.
* The copies go in the last N positions: the target at position C + j is the j-th content token
  (j = 0..N-1, ordered by position in the context); these N positions are the scored ones
  (``mask[:, C:]``). Every marker position comes after the whole context, so the task is causal.
"""
from __future__ import annotations

import torch

from tasks.base import Batch, Task


class SelectiveCopy(Task):
    name = "selective_copy"
    kind = "tokens"
    primary_metric = "accuracy"
    higher_is_better = True
    default_optimizer = {"name": "adam", "lr": 2.4e-3}
    default_batch_size = 64
    default_steps = 2000  # not stated in the paper

    def __init__(self, seq_len: int = 128, num_tokens: int = 10, num_copy: int = 16):
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        if num_copy < 1 or 2 * num_copy > seq_len:
            raise ValueError(f"need 1 <= num_copy <= seq_len / 2, got num_copy={num_copy}, seq_len={seq_len}")
        self.seq_len = int(seq_len)
        self.num_tokens = int(num_tokens)
        self.num_copy = int(num_copy)
        self.context_len = self.seq_len - self.num_copy
        self.blank_id = self.num_tokens
        self.marker_id = self.num_tokens + 1
        self.vocab_size = self.num_tokens + 2

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        L, N, C = self.seq_len, self.num_copy, self.context_len
        # N distinct positions per row among the C context slots, in increasing order.
        pos = torch.rand(batch_size, C, generator=generator).argsort(-1)[:, :N].sort(-1).values
        tok = torch.randint(0, self.num_tokens, (batch_size, N), generator=generator)
        inputs = torch.full((batch_size, L), self.blank_id, dtype=torch.long)
        inputs.scatter_(1, pos, tok)
        inputs[:, C:] = self.marker_id
        targets = torch.full((batch_size, L), self.blank_id, dtype=torch.long)
        targets[:, C:] = tok
        mask = torch.zeros((batch_size, L), dtype=torch.bool)
        mask[:, C:] = True
        return Batch(inputs, targets, mask)

    def describe(self):
        out = super().describe()
        out.update(num_tokens=self.num_tokens, num_copy=self.num_copy,
                   blank_id=self.blank_id, marker_id=self.marker_id)
        return out
