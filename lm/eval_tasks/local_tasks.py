"""Data loading of the local lm-eval tasks in this folder (``--include-path lm/eval_tasks``, which
``python -m lm.harness`` adds by itself).

The task YAMLs say ``dataset_path: json`` and give ``dataset_kwargs: {data_files: {split: file}}`` with
the files relative to this folder; lm-eval would hand those paths to ``datasets.load_dataset`` as they
are, i.e. relative to the current directory, so the YAMLs name :func:`load` as ``custom_dataset``: it
resolves the files against this folder and calls ``datasets.load_dataset("json", data_files=...)``
(no network: the json builder ships with ``datasets``).
"""
from __future__ import annotations

import pathlib

HERE = pathlib.Path(__file__).resolve().parent


def resolve(data_files) -> dict[str, str] | list[str] | str:
    """``data_files`` (a path, a list or a {split: path(s)} dict) with relative paths made absolute
    against this folder; a missing file raises ``FileNotFoundError``."""
    def one(p):
        path = pathlib.Path(p).expanduser()
        path = path if path.is_absolute() else HERE / path
        if not path.is_file():
            raise FileNotFoundError(f"local lm-eval task data file {path} is missing")
        return str(path)

    if isinstance(data_files, dict):
        return {k: ([one(p) for p in v] if isinstance(v, (list, tuple)) else one(v)) for k, v in data_files.items()}
    if isinstance(data_files, (list, tuple)):
        return [one(p) for p in data_files]
    return one(data_files)


def load(data_files=None, dataset_path: str = "json", **_metadata):
    """``custom_dataset`` of the local tasks: a ``datasets.DatasetDict`` of the JSON Lines files.
    lm-eval passes the task's ``metadata`` and ``dataset_kwargs`` as keyword arguments; only
    ``data_files`` (and an optional ``dataset_path`` builder name) are used."""
    import datasets

    if not data_files:
        raise ValueError("a local task needs dataset_kwargs.data_files")
    return datasets.load_dataset(dataset_path, data_files=resolve(data_files))
