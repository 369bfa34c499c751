"""Associative recall (paper section II-B, Fig. 5), with a multi-query (MQAR) option.

Paper: the model "first gives the model an (unordered) sequence of key-value pairs and then asks for
the value associated with a query key after"; context length 32, vocabulary size 5, model width 8,
cross-entropy, Adam (lr 0.0024, appendix B), batch 64.

Token ids (``vocab_size = 2 * num_tokens + 1 = 11`` for the model), keys and values in disjoint
ranges as in Zoology's MQAR:

* ``0 .. num_tokens-1``: keys (``num_tokens = 5``, the paper's vocabulary),
* ``num_tokens .. 2*num_tokens-1``: values (value ``v`` is token ``num_tokens + v``),
* ``2 * num_tokens`` (10): blank.

Layout of one sequence of length L = ``seq_len``, with N = ``num_pairs`` and Q = ``num_queries``::

    position:  0   1   2   3  ...  2N-2  2N-1 | 2N ........................ L-1
    input:     k1  v1  k2  v2 ...  kN    vN   | blanks, with Q query keys; the last
                                              | position L-1 is always a query
    target:    (unscored)                     | at each query position: that key's value

* Keys are N distinct keys (uniform without replacement); values are N distinct values (uniform
  without replacement, as Zoology) and the pairs appear in random order.
* ``num_queries = 1`` (default): the single query is at the last position (classic AR).
  ``num_queries > 1`` (MQAR): Q distinct keys of the sequence are queried; one at position L-1, the
  other Q-1 at distinct uniformly random positions in ``2N .. L-2`` (Zoology biases query positions
  with a power law and also shows each answer after its query in LM format; we keep the region
  blank apart from the queries and score the value at the query position, so every target depends
  only on earlier inputs).
* Scored positions (``mask``) are exactly the query positions; the target there is a value token
  (``num_tokens + v``). Unscored targets hold the blank id.
* ``num_pairs`` defaults to ``num_tokens`` = 5 (every key appears once, in random order); the
  paper does not give the number of pairs, and keys must be unique, so at most ``num_tokens``.
"""
from __future__ import annotations

import torch

from tasks.base import Batch, Task


class AssociativeRecall(Task):
    name = "associative_recall"
    kind = "tokens"
    primary_metric = "accuracy"
    higher_is_better = True
    default_optimizer = {"name": "adam", "lr": 2.4e-3}
    default_batch_size = 64
    default_steps = 2000  # not stated in the paper

    def __init__(self, seq_len: int = 32, num_tokens: int = 5, num_pairs: int = 5, num_queries: int = 1):
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        if not 1 <= num_pairs <= num_tokens:
            raise ValueError(f"need 1 <= num_pairs <= num_tokens (unique keys), got {num_pairs}")
        if not 1 <= num_queries <= num_pairs:
            raise ValueError(f"need 1 <= num_queries <= num_pairs, got {num_queries}")
        if 2 * num_pairs + num_queries > seq_len:
            raise ValueError(
                f"seq_len={seq_len} too short for {num_pairs} pairs and {num_queries} queries"
            )
        self.seq_len = int(seq_len)
        self.num_tokens = int(num_tokens)
        self.num_pairs = int(num_pairs)
        self.num_queries = int(num_queries)
        self.value_offset = self.num_tokens
        self.blank_id = 2 * self.num_tokens
        self.vocab_size = 2 * self.num_tokens + 1

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        L, V, N, Q = self.seq_len, self.num_tokens, self.num_pairs, self.num_queries
        keys = torch.rand(batch_size, V, generator=generator).argsort(-1)[:, :N]
        values = torch.rand(batch_size, V, generator=generator).argsort(-1)[:, :N] + self.value_offset
        inputs = torch.full((batch_size, L), self.blank_id, dtype=torch.long)
        inputs[:, 0 : 2 * N : 2] = keys
        inputs[:, 1 : 2 * N : 2] = values
        # Which pairs are queried (distinct), and where: position L-1 plus Q-1 random slots.
        which = torch.rand(batch_size, N, generator=generator).argsort(-1)[:, :Q]
        qkeys = keys.gather(1, which)
        answers = values.gather(1, which)
        region = L - 1 - 2 * N  # free slots 2N .. L-2
        extra = torch.rand(batch_size, region, generator=generator).argsort(-1)[:, : Q - 1] + 2 * N
        qpos = torch.cat([extra, torch.full((batch_size, 1), L - 1, dtype=torch.long)], dim=1)
        inputs.scatter_(1, qpos, qkeys)
        targets = torch.full((batch_size, L), self.blank_id, dtype=torch.long)
        targets.scatter_(1, qpos, answers)
        mask = torch.zeros((batch_size, L), dtype=torch.bool)
        mask.scatter_(1, qpos, True)
        return Batch(inputs, targets, mask)

    def describe(self):
        out = super().describe()
        out.update(num_tokens=self.num_tokens, num_pairs=self.num_pairs, num_queries=self.num_queries,
                   value_offset=self.value_offset, blank_id=self.blank_id)
        return out
