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

``layout`` (the paper gives none, and the result depends on it; see the Figure 5 variants):

* ``front`` (default): the layout above, pairs at positions 0 .. 2N-1 and the query at L-1. It is
  the layout of the authors' public generator (windsornguyen/spectral_ssm,
  ``benchmarks/synthetic.py``: pairs first, padding, the query key last), except that theirs draws
  one fixed key-value mapping for the whole dataset, where ours draws a new one per sequence (so
  the value must be recalled from the context, not memorised).
* ``adjacent``: the N pairs immediately before the query (positions L-1-2N .. L-2), blanks before
  them; one query, at L-1. The recall distance is at most 2N instead of up to L-1.
* ``zoology``: Zoology's MQAR (Arora et al. 2023, ``multiquery_ar``): the N pairs first, then every
  key queried once (``num_queries`` must equal ``num_pairs``) at positions 2N + 2g, the gaps g drawn
  without replacement from 0 .. (L-2N)/2 - 1 with probability proportional to a g'^(a-1)
  (g' = g + 1, a = ``power_a`` = 0.01: short gaps are likely), and every other position of the
  query region a uniformly random token (Zoology's ``random_non_queries``). The value is scored at
  the query key's position.
* ``safari``: the H3/Safari form (``generate_assoc_recall``): a fresh random map from the N keys to
  values (values may repeat), the context filled with (key, value) pairs drawn with replacement
  (keys repeat, always with their value), then a separator (the blank id, Safari's ``=>``) at L-2
  and a queried key that occurs in the context at L-1 (Safari's ``allow_dot=False``).
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

    LAYOUTS = ("front", "adjacent", "zoology", "safari")

    def __init__(self, seq_len: int = 32, num_tokens: int = 5, num_pairs: int = 5, num_queries: int = 1,
                 layout: str = "front", power_a: float = 0.01):
        if layout not in self.LAYOUTS:
            raise ValueError(f"unknown associative recall layout {layout!r}; valid layouts: {', '.join(self.LAYOUTS)}")
        if layout == "adjacent" and num_queries != 1:
            raise ValueError("layout 'adjacent' has one query (at the last position); set num_queries=1")
        if layout == "zoology" and num_queries != num_pairs:
            raise ValueError(f"layout 'zoology' queries every key once: num_queries must equal num_pairs ({num_pairs})")
        if layout == "zoology" and (seq_len - 2 * num_pairs) // 2 < num_pairs:
            raise ValueError(f"layout 'zoology' needs (seq_len - 2 num_pairs) / 2 >= num_pairs query slots")
        if layout == "safari" and num_queries != 1:
            raise ValueError("layout 'safari' has one query (at the last position); set num_queries=1")
        if not power_a > 0:
            raise ValueError(f"power_a must be > 0, got {power_a}")
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
        self.layout = layout
        self.power_a = float(power_a)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        if self.layout == "zoology":
            return self._sample_zoology(batch_size, generator)
        if self.layout == "safari":
            return self._sample_safari(batch_size, generator)
        L, N, Q = self.seq_len, self.num_pairs, self.num_queries
        keys, values = self._pairs(batch_size, generator)
        inputs = torch.full((batch_size, L), self.blank_id, dtype=torch.long)
        start = L - 1 - 2 * N if self.layout == "adjacent" else 0
        inputs[:, start : start + 2 * N : 2] = keys
        inputs[:, start + 1 : start + 2 * N : 2] = values
        # Which pairs are queried (distinct), and where: position L-1 plus Q-1 random slots.
        which = torch.rand(batch_size, N, generator=generator).argsort(-1)[:, :Q]
        qkeys = keys.gather(1, which)
        answers = values.gather(1, which)
        region = L - 1 - 2 * N  # free slots 2N .. L-2
        extra = torch.rand(batch_size, region, generator=generator).argsort(-1)[:, : Q - 1] + 2 * N
        qpos = torch.cat([extra, torch.full((batch_size, 1), L - 1, dtype=torch.long)], dim=1)
        return self._queried(inputs, qpos, qkeys, answers)

    def _pairs(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """N distinct keys and N distinct values per sequence (uniform without replacement)."""
        V, N = self.num_tokens, self.num_pairs
        keys = torch.rand(batch_size, V, generator=generator).argsort(-1)[:, :N]
        values = torch.rand(batch_size, V, generator=generator).argsort(-1)[:, :N] + self.value_offset
        return keys, values

    def _queried(self, inputs: torch.Tensor, qpos: torch.Tensor, qkeys: torch.Tensor, answers: torch.Tensor) -> Batch:
        """The query keys written at positions ``qpos`` (B, Q); their values are the scored targets there."""
        inputs.scatter_(1, qpos, qkeys)
        targets = torch.full_like(inputs, self.blank_id)
        targets.scatter_(1, qpos, answers)
        mask = torch.zeros(inputs.shape, dtype=torch.bool)
        mask.scatter_(1, qpos, True)
        return Batch(inputs, targets, mask)

    def _sample_zoology(self, batch_size: int, generator: torch.Generator) -> Batch:
        L, N = self.seq_len, self.num_pairs
        keys, values = self._pairs(batch_size, generator)
        inputs = torch.randint(0, self.vocab_size, (batch_size, L), generator=generator)  # random non-queries
        inputs[:, 0 : 2 * N : 2] = keys
        inputs[:, 1 : 2 * N : 2] = values
        space = (L - 2 * N) // 2
        a = self.power_a
        p = a * torch.arange(1, space + 1, dtype=torch.float64) ** (a - 1)
        gaps = torch.multinomial((p / p.sum()).expand(batch_size, space), N, replacement=False, generator=generator)
        qpos = 2 * N + 2 * gaps  # query i asks for key i (all keys, each once)
        return self._queried(inputs, qpos, keys, values)

    def _sample_safari(self, batch_size: int, generator: torch.Generator) -> Batch:
        L, V, N = self.seq_len, self.num_tokens, self.num_pairs
        rows = torch.arange(batch_size)
        mapping = torch.randint(0, V, (batch_size, N), generator=generator) + self.value_offset  # key k -> value
        n_ctx = (L - 2) // 2
        ctx_keys = torch.randint(0, N, (batch_size, n_ctx), generator=generator)
        inputs = torch.full((batch_size, L), self.blank_id, dtype=torch.long)
        inputs[:, 0 : 2 * n_ctx : 2] = ctx_keys
        inputs[:, 1 : 2 * n_ctx : 2] = mapping.gather(1, ctx_keys)
        pick = torch.randint(0, n_ctx, (batch_size,), generator=generator)  # a key that occurs in the context
        qkey = ctx_keys[rows, pick]
        inputs[:, L - 2] = self.blank_id  # the separator
        qpos = torch.full((batch_size, 1), L - 1, dtype=torch.long)
        return self._queried(inputs, qpos, qkey[:, None], mapping[rows, qkey][:, None])

    def describe(self):
        out = super().describe()
        out.update(num_tokens=self.num_tokens, num_pairs=self.num_pairs, num_queries=self.num_queries,
                   value_offset=self.value_offset, blank_id=self.blank_id, layout=self.layout)
        return out
