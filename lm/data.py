"""Make language-model token shards (a Hydra app on ``conf/lm_data.yaml``).

    python -m lm.data [profile=smoke|paper] [corpus.name=shakespeare|local|fineweb_edu] [corpus.path=...]
        [shards.shard_tokens=...] [shards.val_tokens=...] [remap=true|false] [out_dir=...] [overwrite=true]

Writes ``<paths.data>/lm/<corpus>/<profile>/``: ``manifest.json``, ``val_000000.npy``,
``train_000001.npy`` ... (see :mod:`lm.shards`), and with ``remap=true`` ``vocab.npy`` and ``remap/``
(see :mod:`lm.remap`). Rerunning verifies a finished folder, or finishes an interrupted one. A bad
setting or an unreadable corpus stops with ``error: ...`` (exit 1) before any file is written.
"""
from __future__ import annotations

import pathlib
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from lm import REPO

CONF_DIR = REPO / "conf"

if not OmegaConf.has_resolver("repo"):  # ${repo:} of conf/paths (the same as tasks.base registers)
    OmegaConf.register_new_resolver("repo", lambda: str(REPO))


def make(cfg: DictConfig, log=print, command: str | None = None) -> int:
    """Make the shards (and the remapping) ``cfg`` asks for; 0, or 1 after printing ``error: ...``."""
    from lm.corpus import CorpusError, make_corpus
    from lm.remap import remap_shards
    from lm.shards import ShardError, ShardSettings, write_shards
    from lm.tokenizer import TokenizerError, get_encoding

    c = OmegaConf.to_container(cfg.corpus, resolve=True)
    shards = OmegaConf.to_container(cfg.shards, resolve=True)
    try:
        unknown = sorted(set(shards) - set(ShardSettings.__dataclass_fields__))
        if unknown:
            raise ShardError(f"unknown shards setting(s) {unknown}; known: {sorted(ShardSettings.__dataclass_fields__)}")
        settings = ShardSettings(**shards).check()
        enc = get_encoding(str(cfg.tokenizer.name), cache_dir=cfg.tokenizer.cache_dir,
                           allow_download=bool(cfg.tokenizer.allow_download))
        corpus = make_corpus(c["name"], path=c["path"], text_field=c["text_field"], editions=c["editions"],
                             cache_dir=c["cache_dir"], allow_download=bool(c["allow_download"]), config=c["config"],
                             split=c["split"], revision=c["revision"], data_files=c["data_files"],
                             hf_path=c["hf_path"], hf_cache_dir=c["hf_cache_dir"])
        out_dir = pathlib.Path(str(cfg.out_dir))
        extra = {"command": command, "profile": str(cfg.profile.name),
                 "config": OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)}
        extra["config"].pop("profile", None)  # the suite's profile (other sections' sizes)
        write_shards(corpus, out_dir, enc, settings, threads=int(cfg.threads), batch_docs=int(cfg.batch_docs),
                     overwrite=bool(cfg.overwrite), progress=bool(cfg.progress), extra=extra, log=log)
        if cfg.remap:
            remap_shards(out_dir, log=log)
    except (TokenizerError, CorpusError, ShardError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="lm_data")
def main(cfg: DictConfig) -> None:
    code = make(cfg, command="python -m lm.data " + " ".join(sys.argv[1:]))
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
