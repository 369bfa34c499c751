"""``python -m models [--width W] [--depth D] [--seq-len L]``: every registered model with its
parameter count at the given size, its mixer per layer and the backends it uses on this machine.
The paper-scale models (``_large_: true``) are built on the ``meta`` device (counted, not run)."""
from __future__ import annotations

import argparse

import torch

import models


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--width", type=int, default=None, help="override every model's width")
    ap.add_argument("--depth", type=int, default=None, help="override every model's depth")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=12, help="token models: vocabulary size")
    a = ap.parse_args(argv)
    over = {k: v for k, v in (("width", a.width), ("depth", a.depth)) if v is not None}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for name in models.available_models(include_large=True):
        if models.is_large(name):
            with torch.device("meta"):
                m = models.build_model(name, vocab_size=a.vocab, seq_len=a.seq_len, **over)
            used = "(paper-scale: built on meta, not run)"
        else:
            m = models.build_model(name, vocab_size=a.vocab, seq_len=a.seq_len, **over).to(device).eval()
            with torch.no_grad():
                m(torch.randint(0, a.vocab, (2, min(a.seq_len, 64)), device=device))
            used = models.backends(m)
        rows.append((name, f"{models.count_params(m):,}", f"{m.width}/{m.depth}", " ".join(m.mixer_names), used))
    head = ("model", "params", "width/depth", "mixer per layer", f"backends on {device}")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
    print(f"\nToken input, vocabulary {a.vocab}, seq_len {a.seq_len}; mixers: {', '.join(models.available_mixers())}")


if __name__ == "__main__":
    main()
