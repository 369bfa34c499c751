"""Optional CUDA fast paths (flash-attn, mamba-ssm, flashfftconv) against the plain PyTorch paths.

Each test is skipped, with the reason, where CUDA or the package is missing (as on CI)."""
import importlib.util

import pytest
import torch

CUDA = torch.cuda.is_available()


def need(pkg):
    if not CUDA:
        pytest.skip("no CUDA device: fast path not exercised here")
    if importlib.util.find_spec(pkg) is None:
        pytest.skip(f"{pkg} is not installed (pip install '.[gpu]')")


@pytest.mark.parametrize("window", [None, 16])
def test_flash_attn_matches_sdpa(window):
    need("flash_attn")
    from models.attention import Attention

    att = Attention(64, 128, num_heads=4, window=window).cuda().to(torch.bfloat16)
    x = torch.randn(2, 128, 64, device="cuda", dtype=torch.bfloat16)
    y_fast = att(x)
    assert att.backend == "attention=flash_attn"
    att.use_flash_attn = False
    y_ref = att(x)
    assert att.backend == "attention=sdpa"
    assert torch.allclose(y_fast.float(), y_ref.float(), atol=3e-2, rtol=3e-2)


def test_mamba_ssm_matches_torch_scan():
    need("mamba_ssm")
    from models.mamba2 import Mamba2

    m = Mamba2(64, 256).cuda()
    x = torch.randn(2, 256, 64, device="cuda")
    y_fast = m(x)
    assert m.backend == "ssd=mamba_ssm"
    m.use_fast_path = False
    y_ref = m(x)
    assert m.backend == "ssd=torch"
    assert torch.allclose(y_fast, y_ref, atol=1e-3, rtol=1e-3)


def test_flashfftconv_matches_torch_fft():
    need("flashfftconv")
    from models.stu import STUT

    layer = STUT(64, 256).cuda().half()
    x = torch.randn(2, 256, 64, device="cuda", dtype=torch.half)
    y_fast = layer(x)
    assert layer.backend == "fft=flashfftconv"
    layer.use_flashfftconv = False
    y_ref = layer(x)
    assert torch.allclose(y_fast.float(), y_ref.float(), atol=5e-2, rtol=5e-2)


def test_plain_paths_name_themselves_on_cpu():
    """Without the extras every model still runs, and its record says which path ran."""
    import models

    m = models.build_model("flash_stu", vocab_size=20, seq_len=32)
    m(torch.randint(0, 20, (1, 32)))
    b = models.backends(m)
    assert "fft=" in b and "attention=" in b
    if not CUDA:
        assert "flash_attn" not in b and "flashfftconv" not in b
