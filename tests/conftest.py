import os
import sys
import pathlib

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One torch thread (tiny sizes; two threads on a shared 2-core machine can wait on each other
    for seconds); the count is restored for the tests that follow."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def paths_overrides(root) -> list[str]:
    """Overrides that send every output of a composed config under ``root`` (and quiet it)."""
    return [f"paths.results={root}/res", f"paths.plots={root}/plots", f"paths.runs={root}/runs",
            f"paths.data={root}/data", "progress=false", "device=cpu"]
