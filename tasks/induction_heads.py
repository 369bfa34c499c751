"""Induction heads (paper section II-B, Fig. 4): recall the token that followed a flag.

Paper: "the model is required to recall one token (sampled uniformly from a vocabulary) immediately
after a special flag token; the rest of the context consists of the same special blank token";
context length 128, vocabulary size 10, cross-entropy, Adam (lr 0.0024, appendix B), batch 64.

Token ids (``vocab_size = num_tokens + 2 = 12`` for the model):

* ``0 .. num_tokens-1``: content tokens (``num_tokens = 10``, the paper's vocabulary),
* ``num_tokens`` (10): the flag token,
* ``num_tokens + 1`` (11): the blank token.

Layout of one sequence of length L = ``seq_len`` (choices the paper leaves open are ours; they
follow the usual "flag ... flag -> answer" form of the task, e.g. H3/Safari's induction head)::

    position:  0 ........ p     p+1   p+2 ..... L-2   L-1
    token:     blank ...  FLAG  tok   blank ... blank FLAG

* ``p`` is uniform on ``0 .. L-3`` and ``tok`` uniform on the content tokens, independently.
* The flag appears exactly twice: at ``p`` and at the last position ``L-1``, where it is the query.
* Target at position ``L-1`` is ``tok`` (the token after the first flag); it is the only scored
  position (``mask[:, L-1]``). The output there depends only on inputs at positions <= L-1, so a
  causal model can solve it. Unscored target positions hold the blank id (ignored by the mask).
"""
from __future__ import annotations

import torch

from tasks.base import Batch, Task


class InductionHeads(Task):
    name = "induction_heads"
    kind = "tokens"
    primary_metric = "accuracy"
    higher_is_better = True
    default_optimizer = {"name": "adam", "lr": 2.4e-3}
    default_batch_size = 64
    default_steps = 2000  # not stated in the paper

    def __init__(self, seq_len: int = 128, num_tokens: int = 10):
        if seq_len < 3:
            raise ValueError(f"seq_len must be >= 3, got {seq_len}")
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        self.seq_len = int(seq_len)
        self.num_tokens = int(num_tokens)
        self.flag_id = self.num_tokens
        self.blank_id = self.num_tokens + 1
        self.vocab_size = self.num_tokens + 2

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        L = self.seq_len
        rows = torch.arange(batch_size)
        pos = torch.randint(0, L - 2, (batch_size,), generator=generator)  # 0 .. L-3
        tok = torch.randint(0, self.num_tokens, (batch_size,), generator=generator)
        inputs = torch.full((batch_size, L), self.blank_id, dtype=torch.long)
        inputs[rows, pos] = self.flag_id
        inputs[rows, pos + 1] = tok
        inputs[:, -1] = self.flag_id
        targets = torch.full((batch_size, L), self.blank_id, dtype=torch.long)
        targets[:, -1] = tok
        mask = torch.zeros((batch_size, L), dtype=torch.bool)
        mask[:, -1] = True
        return Batch(inputs, targets, mask)

    def describe(self):
        out = super().describe()
        out.update(num_tokens=self.num_tokens, flag_id=self.flag_id, blank_id=self.blank_id)
        return out
