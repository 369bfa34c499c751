"""Sample text from a trained language model (a checkpoint of :mod:`lm.train`): temperature and top-k.

    python -m lm.sample RUN_OR_CHECKPOINT [--prompt TEXT] [--tokens 100] [--temperature 1.0]
        [--top-k 50] [--samples 1] [--seed 0] [--device cpu]

``RUN_OR_CHECKPOINT``: a run folder (its latest checkpoint), its ``checkpoints/`` folder or one
``checkpoints/step_N`` folder. The model is rebuilt from the checkpoint's ``meta.json`` (registry
name, fields, vocabulary, sequence length) and its weights read with
:func:`lm.checkpoint.load_model_weights` (no process group). The prompt is encoded with the data's
tokenizer (o200k_base) after an end-of-text token (every document of the shards starts with one),
and, for the smoke profile's remapped vocabulary, mapped to the remapped ids (ids the training
shards never had -> ``<unk>``); generated ids are mapped back with :func:`lm.remap.unmap` and
decoded (``<unk>`` is printed as ``<unk>``; the model is never asked to produce it). The paper's
appendix sample used temperature 1.0 and top-k 50, the defaults here. Without a KV cache, each new
token runs the model on the last ``seq_len`` tokens.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from lm import checkpoint as ckpt


def load_model(path, device: str = "cpu"):
    """``(model, meta)`` of a checkpoint / run folder, in eval mode on ``device``."""
    import models

    folder = ckpt.resolve(path)
    meta = ckpt.read_meta(folder)
    skip = {"_target_", *getattr(models, "REGISTRY_KEYS", ("_large_",))}
    fields = {k: v for k, v in meta["model_fields"].items() if k not in skip}
    model = models.build_model(meta["model"], vocab_size=int(meta["vocab_size"]), seq_len=int(meta["seq_len"]),
                               **fields)
    ckpt.load_model_weights(folder, model)
    return model.to(device).eval(), meta


class Codec:
    """Text <-> model ids for the data a model was trained on (remapped or not)."""

    def __init__(self, data_root, remapped: bool, cache_dir=None, allow_download: bool = False):
        from lm.shards import read_manifest
        from lm.tokenizer import get_encoding

        m = read_manifest(data_root)
        if m is None:
            raise FileNotFoundError(f"{data_root}: no manifest.json (the data the model was trained on)")
        self.enc = get_encoding(m["tokenizer"]["name"], cache_dir=cache_dir, allow_download=allow_download)
        self.remapped = bool(remapped)
        self.eot_source = int(m["tokenizer"]["eot_id"])
        if self.remapped:
            from lm.remap import load_vocab, lookup_table

            self.vocab, r = load_vocab(data_root)
            self.lut = lookup_table(self.vocab, int(m["tokenizer"]["n_vocab"]))
            self.eot, self.unk = int(r["eot_id"]), int(r["unk_id"])
        else:
            self.vocab = self.lut = None
            self.eot, self.unk = self.eot_source, None

    def encode(self, text: str) -> list[int]:
        ids = [self.eot_source] + self.enc.encode_ordinary(text)
        if self.remapped:
            return [int(i) for i in self.lut[np.asarray(ids, dtype=np.int64)]]
        return ids

    def decode(self, ids) -> str:
        if self.remapped:
            from lm.remap import unmap

            ids = unmap(ids, self.vocab)
        out, run = [], []
        for i in (int(t) for t in ids):
            if i < 0:
                if run:
                    out.append(self.enc.decode(run))
                    run = []
                out.append("<unk>")
            else:
                run.append(i)
        if run:
            out.append(self.enc.decode(run))
        return "".join(out)


@torch.no_grad()
def generate(model, ids: torch.Tensor, n: int, temperature: float = 1.0, top_k: int | None = 50,
             generator: torch.Generator | None = None, banned: list[int] | None = None) -> torch.Tensor:
    """``ids`` (B, T) followed by ``n`` sampled tokens: softmax of the last logits / temperature over
    the ``top_k`` largest (temperature 0: the argmax); ``banned`` ids are never drawn."""
    seq_len = int(getattr(model, "seq_len", ids.shape[1] + n))
    for _ in range(n):
        logits = model(ids[:, -seq_len:])[:, -1, :].float()
        if banned:
            logits[:, banned] = -float("inf")
        if temperature <= 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None and 0 < top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -float("inf"))
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(ids.device)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


def sample(path, prompt: str = "", tokens: int = 100, temperature: float = 1.0, top_k: int | None = 50,
           samples: int = 1, seed: int = 0, device: str = "cpu", tokenizer_cache=None,
           allow_download: bool = False) -> list[str]:
    """``samples`` continuations of ``prompt`` (the prompt included) from the model at ``path``."""
    if tokens < 0 or samples < 1:
        raise ValueError("tokens must be >= 0 and samples >= 1")
    model, meta = load_model(path, device)
    codec = Codec(meta["data_root"], meta["remapped"], cache_dir=tokenizer_cache, allow_download=allow_download)
    start = torch.tensor([codec.encode(prompt)] * samples, dtype=torch.long, device=device)
    g = torch.Generator().manual_seed(seed)
    out = generate(model, start, tokens, temperature, top_k, g, banned=[codec.unk] if codec.unk is not None else None)
    return [codec.decode(row[1:].tolist()) for row in out.cpu()]  # without the leading end-of-text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lm.sample", description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help="run folder, its checkpoints/ folder or a checkpoints/step_N folder")
    ap.add_argument("--prompt", default="")
    ap.add_argument("--tokens", type=int, default=100, help="tokens to generate")
    ap.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    ap.add_argument("--top-k", type=int, default=50, help="0: the whole vocabulary")
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tokenizer-cache", default=None)
    ap.add_argument("--allow-download", action="store_true", help="fetch the tokenizer's ranks when not cached")
    a = ap.parse_args(argv)
    from lm.shards import ShardError
    from lm.tokenizer import TokenizerError

    try:
        texts = sample(a.path, a.prompt, a.tokens, a.temperature, a.top_k or None, a.samples, a.seed, a.device,
                       a.tokenizer_cache, a.allow_download)
    except (FileNotFoundError, ValueError, ShardError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for i, t in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i}")
        print(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
