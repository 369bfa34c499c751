"""The language models of section IV (conf/model/lm_*.yaml): parameter counts of the paper-scale configs
against Tables XI/XII (built on the meta device: no memory, no eigendecomposition), the architecture
facts they encode, learnable filters, tied embeddings, the vocabulary rounding, and the tiny CPU sizes."""
import math

import pytest
import torch

import models
from models.spectral import spectral_filters
from models.stu import STU, STUT, filter_bank

O200K_IDS = 200_019            # tiktoken o200k_base
PAPER_VOCAB = 200_064          # 200,019 rounded up to a multiple of 64 (Table XI)
PAPER_SEQ_LEN = 8192           # Tables XI and XII
SMOKE_VOCAB = 22_275           # the smoke corpus's remapped vocabulary
TINY_SEQ_LEN = 256

# Table XII (500M runs) and Table XI (2B run), millions of parameters.
PAPER_PARAMS = {
    "lm_flash_stu": 550, "lm_transformer": 564, "lm_mamba2": 561, "lm_mamba2_hybrid": 546,
    "lm_flash_stu_2b": 2672, "lm_transformer_2b": 2667,
}
TINY = ["lm_flash_stu_tiny", "lm_transformer_tiny", "lm_mamba2_tiny", "lm_mamba2_hybrid_tiny"]


def _meta(name, vocab_size=O200K_IDS, seq_len=PAPER_SEQ_LEN, **kw):
    with torch.device("meta"):
        return models.build_model(name, vocab_size=vocab_size, seq_len=seq_len, **kw)


def _authors_count(name: str) -> int:
    """The parameter count of the authors' models written out from their code (windsornguyen/flash-stu
    and senior-thesis), independently of ours: tied embedding V x d, final RMSNorm d, and per layer
    2 RMSNorms + SwiGLU (3 d h) + the mixer (attention 4 d^2; tensordot STU-T d^2 + K d + learnable
    filters L K; Mamba-2 block: 1 RMSNorm + in_proj + conv + dt_bias, A_log, D + gated norm + out_proj)."""
    V, L, K = PAPER_VOCAB, PAPER_SEQ_LEN, 24

    def mamba(d, heads=32, n=128, conv=4, per_head_d=True):
        e = 2 * d
        d_in = 2 * e + 2 * n + heads
        D = heads if per_head_d else e  # ours: one D a head; the code: one a head channel
        return d + d * d_in + (e + 2 * n) * (conv + 1) + 2 * heads + D + e + e * d

    if name in ("lm_flash_stu", "lm_flash_stu_2b"):
        d, depth = (896, 12) if name == "lm_flash_stu" else (1536, 26)
        layer = 2 * d + 3 * d * 12 * d
        return V * d + d + depth * layer + depth // 2 * (d * d + K * d + L * K) + depth // 2 * 4 * d * d
    if name in ("lm_transformer", "lm_transformer_2b"):
        d, depth = (896, 12) if name == "lm_transformer" else (1536, 25)
        return V * d + d + depth * (2 * d + 3 * d * 12 * d + 4 * d * d)
    if name == "lm_mamba2":
        d = 1024
        return V * d + d + 54 * mamba(d)
    if name == "lm_mamba2_hybrid":
        d = 896
        return V * d + d + 28 * mamba(d) + 28 * (2 * d + 4 * d * d + 3 * d * 2 * d)
    raise KeyError(name)


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_paper_configs_match_the_tables(name):
    m = _meta(name)
    n = models.count_params(m)
    paper = PAPER_PARAMS[name] * 1e6
    assert abs(n / paper - 1) < 0.03, f"{name}: {n:,} parameters, paper {paper:,.0f}"
    assert n == _authors_count(name), f"{name}: {n:,} != the authors' architecture {_authors_count(name):,}"
    # vocabulary rounded up to a multiple of 64; embeddings tied (one tensor, counted once)
    assert m.embed.weight.shape[0] == PAPER_VOCAB and m.padded_vocab == PAPER_VOCAB
    assert m.head.weight is m.embed.weight
    assert all(p.device.type == "meta" for p in m.parameters())


def test_paper_configs_are_listed_only_on_request():
    small, every = models.available_models(), models.available_models(include_large=True)
    for name in PAPER_PARAMS:
        assert models.is_large(name) and name in every and name not in small
    for name in TINY:
        assert not models.is_large(name) and name in small
    assert "_large_" not in models.model_config("lm_flash_stu")  # a registry key, not a model field


def test_flash_stu_architecture():
    for name, heads, position in (("lm_flash_stu", 8, "rope"), ("lm_flash_stu_2b", 8, "alibi")):
        m = _meta(name)
        assert m.mixer_names == ["stu_t", "sliding_attention"] * (m.depth // 2)
        stu, attn = m.blocks[0].mixer, m.blocks[1].mixer
        assert isinstance(stu, STUT) and stu.tied and stu.use_minus and stu.k == 24
        assert stu.M_in_minus is None and stu.M_filt_minus is None  # one M_inputs, one M_filters
        assert stu.phi is not None and tuple(stu.phi.shape) == (PAPER_SEQ_LEN, 24)  # learnable, own per layer
        assert m.blocks[0].mixer.phi is not m.blocks[2].mixer.phi
        assert attn.window == PAPER_SEQ_LEN // 8 == 1024 and attn.softcap == 50.0
        assert attn.num_heads == heads and attn.position == position
        for b in m.blocks:  # SwiGLU x12, no biases, after every mixer
            assert b.ff.kind == "swiglu" and b.ff.up.out_features == 12 * m.width and b.ff.up.bias is None


def test_baseline_architectures():
    t = _meta("lm_transformer")
    a = t.blocks[0].mixer
    assert a.window is None and a.softcap == 50.0 and a.position == "rope" and a.num_heads == 8
    assert _meta("lm_transformer_2b").blocks[0].mixer.position == "alibi"
    m = _meta("lm_mamba2")
    assert m.depth == 54 and all(b.ff is None for b in m.blocks)  # Mamba-2 blocks carry no MLP
    s = m.blocks[0].mixer
    assert (s.d_inner, s.nheads, s.headdim, s.d_state, s.chunk_size) == (2048, 32, 64, 128, 256)
    h = _meta("lm_mamba2_hybrid")
    assert h.mixer_names == ["mamba2", "sliding_attention"] * 28
    assert all(b.ff is None for b in h.blocks[0::2])
    assert all(b.ff.up.out_features == 2 * 896 for b in h.blocks[1::2])
    s, a = h.blocks[0].mixer, h.blocks[1].mixer
    assert (s.d_inner, s.nheads, s.headdim, s.d_state) == (1792, 32, 56, 128)
    assert a.num_heads == 32 and a.position == "alibi" and a.window == 1024 and a.softcap == 50.0


def test_learnable_filters_start_at_the_spectral_filters_and_learn():
    L, W, K = 48, 6, 24
    torch.manual_seed(3)
    fixed = STUT(W, L, num_filters=K, tied=True).double()
    torch.manual_seed(3)
    learn = STUT(W, L, num_filters=K, tied=True, learnable_filters=True).double()
    assert fixed.phi is None and "phi" not in dict(fixed.named_parameters())
    assert isinstance(learn.phi, torch.nn.Parameter) and learn.phi.requires_grad
    # initialised to the fixed filters (float32 storage, then cast), other parameters drawn as without it
    assert torch.allclose(learn.phi, spectral_filters(L, K), rtol=1e-6, atol=1e-7)
    assert torch.equal(learn.M_in_plus, fixed.M_in_plus) and torch.equal(learn.M_filt_plus, fixed.M_filt_plus)
    x = torch.randn(2, L, W, dtype=torch.float64)
    assert torch.allclose(learn(x), fixed(x), rtol=1e-6, atol=1e-6)
    learn(x).pow(2).mean().backward()
    assert learn.phi.grad is not None and learn.phi.grad.abs().max() > 0
    before = learn.phi.detach().clone()
    torch.optim.SGD(learn.parameters(), lr=0.1).step()
    assert not torch.equal(learn.phi, before)
    # on the meta device nothing is computed
    with torch.device("meta"):
        big = STUT(8, 8192, num_filters=24, tied=True, learnable_filters=True)
    assert big.phi.is_meta and tuple(big.phi.shape) == (8192, 24)


def test_more_filters_than_taps_are_zero_and_only_learnable_ones_may_have_them():
    """A length-L Hankel matrix has L eigenvectors: filters past the L-th are zero. Learnable filters
    (Flash STU: 24 filters on the 16-token sequences of the suite's quick tests) start from those
    zero columns; fixed ones would keep dead projections, so such a layer is refused with the reason
    (Table I's robotics STU with 16 filters in a window of 8 fails before any work)."""
    f = filter_bank(10, 24)
    assert f.shape == (10, 24) and torch.equal(f[:, :10], spectral_filters(10, 10)) and not f[:, 10:].any()
    assert torch.equal(filter_bank(30, 24), spectral_filters(30, 24))
    layer = STUT(4, 10, num_filters=24, tied=True, learnable_filters=True)
    assert torch.isfinite(layer(torch.randn(2, 10, 4))).all()
    with pytest.raises(ValueError, match="num_filters=24 > seq_len=10.*only 10 eigenvectors"):
        STUT(4, 10, num_filters=24, tied=True, learnable_filters=False)
    with pytest.raises(ValueError, match="num_filters=24 > seq_len=10"):
        STU(4, 10, num_filters=24)


def test_vocabulary_rounding_keeps_the_real_logits():
    m = models.build_model("lm_transformer_tiny", vocab_size=SMOKE_VOCAB, seq_len=32)
    assert m.embed.weight.shape[0] == 22_336 == math.ceil(SMOKE_VOCAB / 64) * 64
    assert m(torch.randint(0, SMOKE_VOCAB, (2, 8))).shape == (2, 8, SMOKE_VOCAB)
    exact = models.build_model("lm_transformer_tiny", vocab_size=22_336, seq_len=32)
    assert exact.embed.weight.shape[0] == 22_336 and exact(torch.randint(0, 9, (1, 4))).shape[-1] == 22_336
    plain = models.build_model("transformer", vocab_size=11, seq_len=8)  # default: no rounding
    assert plain.embed.weight.shape[0] == 11


def test_mlp_mixers_names_must_be_mixers():
    with pytest.raises(ValueError, match="mlp_mixers"):
        models.build_model("lm_mamba2_hybrid_tiny", vocab_size=11, seq_len=16, mlp_mixers=["attention"])


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_train_on_cpu(name, one_thread):
    torch.manual_seed(0)
    m = models.build_model(name, vocab_size=SMOKE_VOCAB, seq_len=TINY_SEQ_LEN)
    n = models.count_params(m)
    assert 300_000 < n < 5_000_000 and m.width <= 128 and m.depth <= 4
    assert m.head.weight is m.embed.weight  # tied: one tensor
    x = torch.randint(0, SMOKE_VOCAB, (2, TINY_SEQ_LEN))
    y = torch.randint(0, SMOKE_VOCAB, (2, TINY_SEQ_LEN))
    out = m(x)
    assert out.shape == (2, TINY_SEQ_LEN, SMOKE_VOCAB)
    loss = torch.nn.functional.cross_entropy(out.reshape(-1, SMOKE_VOCAB), y.reshape(-1))
    assert loss < math.log(SMOKE_VOCAB) + 3, "the scaled embedding init starts near the uniform loss"
    loss.backward()
    missing = [k for k, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient reaches {missing}"
    torch.optim.AdamW(m.parameters(), lr=1e-3).step()
    assert m.head.weight is m.embed.weight
    if "flash_stu" in name:
        assert all(b.mixer.phi.grad.abs().max() > 0 for b in m.blocks[0::2])


def test_configs_compose_through_hydra_and_build():
    """The training entry point builds a Hydra-composed cfg.model: the registry key is dropped there."""
    from omegaconf import OmegaConf

    from benchmarks.config import compose

    cfg = compose(["model=lm_flash_stu_tiny", "task=induction_heads"])
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    assert spec["_large_"] is False and spec["mixer_options"]["stu_t"]["learnable_filters"] is True
    m = models._instantiate(spec, "model", vocab_size=50, seq_len=32)
    assert m.width == 64 and m.depth == 4 and m.blocks[0].mixer.phi.shape == (32, 24)
