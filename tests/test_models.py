"""Every registered model and mixer (driven by conf/model and conf/mixer): shapes, causality,
no NaN, one optimizer step lowers the loss, gradients reach every parameter."""
import pytest
import torch

import models

MODELS = models.available_models()
MIXERS = models.available_mixers()
LENGTHS = [1, 7, 33, 64]  # includes non-powers of two


def _model(name, kind, seq_len=64, **kw):
    if kind == "tokens":
        return models.build_model(name, vocab_size=11, seq_len=seq_len, **kw)
    return models.build_model(name, d_in=5, d_out=3, seq_len=seq_len, **kw)


def _input(kind, B, L, dtype=torch.float64):
    if kind == "tokens":
        return torch.randint(0, 11, (B, L))
    return torch.randn(B, L, 5, dtype=dtype)


def _perturb(x, t, kind):
    x2 = x.clone()
    if kind == "tokens":
        x2[:, t:] = (x2[:, t:] + 1 + torch.randint(0, 9, x2[:, t:].shape)) % 11
    else:
        x2[:, t:] += torch.randn_like(x2[:, t:])
    return x2


@pytest.mark.parametrize("kind", ["tokens", "continuous"])
@pytest.mark.parametrize("name", MODELS)
def test_model_shapes_causal_no_nan(name, kind):
    m = _model(name, kind).double().eval()
    for L in (7, 33, 64):
        x = _input(kind, 2, L)
        y = m(x)
        out = 11 if kind == "tokens" else 3
        assert y.shape == (2, L, out)
        assert torch.isfinite(y).all()
        t = L // 2
        y2 = m(_perturb(x, t, kind))
        assert torch.allclose(y[:, :t], y2[:, :t], atol=1e-9, rtol=0), f"{name} leaks the future at L={L}"
        assert not torch.allclose(y[:, t:], y2[:, t:]), f"{name} ignores its input"
    assert models.backends(m), "every model names the backend it used"


@pytest.mark.parametrize("kind", ["tokens", "continuous"])
@pytest.mark.parametrize("name", MODELS)
def test_model_trains_and_grads_reach_all(name, kind):
    torch.manual_seed(1)
    m = _model(name, kind, seq_len=32)
    x = _input(kind, 8, 32, torch.float32)
    if kind == "tokens":
        y = torch.randint(0, 11, (8, 32))
        loss_fn = lambda out: torch.nn.functional.cross_entropy(out.reshape(-1, 11), y.reshape(-1))
    else:
        y = torch.randn(8, 32, 3)
        loss_fn = lambda out: (out - y).pow(2).mean()
    loss0 = loss_fn(m(x)) + m.aux_loss
    loss0.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient reaches {missing}"
    # a short step down the gradient (length 1e-3 in parameter space) lowers the loss to first order,
    # whatever the model's size and curvature (a fixed-lr Adam step can overshoot on a wide model)
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    with torch.no_grad():
        for p in m.parameters():
            if p.grad is not None:
                p -= (1e-3 / norm).to(p.dtype) * p.grad
        loss1 = loss_fn(m(x)) + m.aux_loss
    assert loss1 < loss0


@pytest.mark.parametrize("name", MIXERS)
def test_mixer_shapes_and_causality(name):
    width, seq_len = 16, 64
    mix = models.build_mixer(name, width=width, seq_len=seq_len).double()
    for L in LENGTHS:
        x = torch.randn(3, L, width, dtype=torch.float64)
        y = mix(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        for t in {0, L // 2, L - 1}:
            x2 = x.clone()
            x2[:, t] += 1.0
            y2 = mix(x2)
            assert torch.allclose(y[:, :t], y2[:, :t], atol=1e-10, rtol=0), f"{name} not causal (L={L}, t={t})"
    assert isinstance(mix.backend, str) and "=" in mix.backend


@pytest.mark.parametrize("name", MIXERS)
def test_mixer_gradients_float32(name):
    mix = models.build_mixer(name, width=16, seq_len=40)
    x = torch.randn(4, 40, 16, requires_grad=True)
    mix(x).pow(2).mean().backward()
    missing = [n for n, p in mix.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no gradient reaches {missing}"
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_unknown_names_list_valid_choices():
    with pytest.raises(ValueError, match="valid models: .*stu_t"):
        models.build_model("stu_tt", vocab_size=5, seq_len=8)
    with pytest.raises(ValueError, match="valid mixers: .*attention"):
        models.build_mixer("atention", width=8, seq_len=8)
    with pytest.raises(ValueError, match="valid fields: .*width"):
        models.build_model("stu", vocab_size=5, seq_len=8, widht=4)
    with pytest.raises(ValueError, match="valid fields: .*num_filters"):
        models.build_mixer("stu", width=8, seq_len=8, num_filter=3)


def test_overrides_apply():
    m = models.build_model("stu_t", d_in=2, d_out=2, seq_len=16, width=24, depth=3,
                           mixer_options={"stu_t": {"num_filters": 5}})
    assert len(m.blocks) == 3 and m.width == 24
    assert m.blocks[0].mixer.M_filt_plus.shape == (5, 24)


def test_wrong_input_shape_is_a_clear_error():
    m = models.build_model("stu", d_in=5, d_out=3, seq_len=16)
    with pytest.raises(ValueError, match=r"\(batch, length, 5\)"):
        m(torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="seq_len=16"):
        m(torch.randn(2, 17, 5))


def test_hybrids_alternate_mixers():
    m = models.build_model("flash_stu", vocab_size=50, seq_len=64)
    assert m.mixer_names == ["stu_t", "sliding_attention"] * 2
    assert m.blocks[1].mixer.window == 8 and m.blocks[1].mixer.softcap == 50.0
    h = models.build_model("mamba2_hybrid", vocab_size=50, seq_len=64)
    assert h.mixer_names == ["mamba2", "attention"] * 2


def test_moe_router_is_per_token_and_loss_positive():
    from models.blocks import MoE
    moe = MoE(8, 16, num_experts=4, top_k=2).double()
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    y = moe(x)
    # Each token's output depends on that token alone: no capacity rule couples tokens.
    y_single = torch.stack([moe(x[:, t : t + 1])[:, 0] for t in range(10)], dim=1)
    assert torch.allclose(y, y_single, atol=1e-12)
    assert moe.aux_loss > 0
