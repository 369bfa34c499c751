"""Tests for the four synthetic task generators (tasks/lds.py, induction_heads.py,
associative_recall.py, selective_copy.py) and their conf/task/*.yaml."""
from __future__ import annotations

import pytest
import torch

from tasks import Task, available_tasks, build_task
from tasks.lds import make_system

TOKEN_TASKS = ["induction_heads", "associative_recall", "selective_copy"]
SYNTHETIC = ["lds", *TOKEN_TASKS]
BATCH = 64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- hand-written solvers: they read only the inputs ------------------------------------------

def solve_induction_heads(task, inputs: torch.Tensor) -> torch.Tensor:
    """Predicted targets (B, L): at the final flag, the token after the first flag."""
    out = torch.full_like(inputs, task.blank_id)
    for b, row in enumerate(inputs.tolist()):
        first = row.index(task.flag_id)
        assert first < len(row) - 2
        out[b, -1] = row[first + 1]
    return out


def solve_associative_recall(task, inputs: torch.Tensor) -> torch.Tensor:
    """At every key token after the pair block, the value that followed that key in the block."""
    out = torch.full_like(inputs, task.blank_id)
    n = task.num_pairs
    for b, row in enumerate(inputs.tolist()):
        table = {row[2 * i]: row[2 * i + 1] for i in range(n)}
        for pos in range(2 * n, len(row)):
            if row[pos] < task.num_tokens:  # a key token: a query
                out[b, pos] = table[row[pos]]
    return out


def solve_selective_copy(task, inputs: torch.Tensor) -> torch.Tensor:
    """At the marker positions, the non-blank context tokens in order."""
    out = torch.full_like(inputs, task.blank_id)
    for b, row in enumerate(inputs.tolist()):
        first_marker = row.index(task.marker_id)
        content = [x for x in row[:first_marker] if x != task.blank_id]
        for j, pos in enumerate(range(first_marker, len(row))):
            out[b, pos] = content[j]
    return out


SOLVERS = {
    "induction_heads": solve_induction_heads,
    "associative_recall": solve_associative_recall,
    "selective_copy": solve_selective_copy,
}


def direct_lds(task, u: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Plain state-space recursion with A itself: target at t is C x_{t+1} (+ D u_t)."""
    u = u.double()
    x = torch.zeros(u.shape[0], task.d_hidden, dtype=torch.float64)
    ys = []
    for t in range(u.shape[1]):
        x = x @ task.A.T + u[:, t] @ task.B.T
        if w is not None:
            x = x + w[:, t]
        ys.append(x @ task.C.T + u[:, t] @ task.D.T)
    return torch.stack(ys, 1)


# --- registry / config ---------------------------------------------------------------------

def test_registry_lists_synthetic_tasks():
    assert set(SYNTHETIC) <= set(available_tasks())


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError) as e:
        build_task("nope")
    for name in SYNTHETIC:
        assert name in str(e.value)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_unknown_field_raises(name):
    with pytest.raises(ValueError, match="unknown field"):
        build_task(name, not_a_field=1)


@pytest.mark.parametrize(
    "name,cls,attrs",
    [
        ("lds", "LDS", dict(kind="continuous", seq_len=100, d_in=5, d_out=5, d_hidden=256, rho=0.99,
                            primary_metric="mse", higher_is_better=False, default_steps=5000,
                            default_batch_size=32)),
        ("induction_heads", "InductionHeads", dict(kind="tokens", seq_len=128, vocab_size=12,
                                                   primary_metric="accuracy", higher_is_better=True)),
        ("associative_recall", "AssociativeRecall", dict(kind="tokens", seq_len=32, vocab_size=11,
                                                         num_queries=1, primary_metric="accuracy")),
        ("selective_copy", "SelectiveCopy", dict(kind="tokens", seq_len=128, vocab_size=12,
                                                 num_copy=16, primary_metric="accuracy")),
    ],
)
def test_paper_defaults(name, cls, attrs):
    task = build_task(name)
    assert isinstance(task, Task) and type(task).__name__ == cls
    for k, v in attrs.items():
        assert getattr(task, k) == v, k
    if name == "lds":
        assert task.default_optimizer["name"] == "rmsprop"
    else:
        assert task.default_optimizer == {"name": "adam", "lr": 2.4e-3}
        assert task.default_batch_size == 64


# --- shapes, dtypes, determinism -------------------------------------------------------------

@pytest.mark.parametrize("name", SYNTHETIC)
def test_shapes_and_dtypes(name):
    task = build_task(name)
    b = task.sample(BATCH, gen(0))
    L = task.seq_len
    assert b.mask.shape == (BATCH, L) and b.mask.dtype == torch.bool and b.mask.any()
    if task.kind == "tokens":
        assert b.inputs.shape == b.targets.shape == (BATCH, L)
        assert b.inputs.dtype == b.targets.dtype == torch.int64
        for t in (b.inputs, b.targets):
            assert int(t.min()) >= 0 and int(t.max()) < task.vocab_size
        assert task.model_shapes() == {"vocab_size": task.vocab_size, "seq_len": L}
    else:
        assert b.inputs.shape == (BATCH, L, task.d_in) and b.targets.shape == (BATCH, L, task.d_out)
        assert b.inputs.dtype == b.targets.dtype == torch.float32
        assert b.mask.all()
        assert torch.isfinite(b.targets).all()


@pytest.mark.parametrize("name", SYNTHETIC)
def test_determinism_per_seed(name):
    task = build_task(name)
    a, b, c = task.sample(16, gen(1)), task.sample(16, gen(1)), task.sample(16, gen(2))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a.inputs, c.inputs)
    assert torch.equal(task.eval_batch(8, 5).inputs, task.eval_batch(8, 5).inputs)


@pytest.mark.parametrize("name", TOKEN_TASKS)
def test_loss_and_metrics_run(name):
    task = build_task(name)
    b = task.sample(8, gen(0))
    logits = torch.randn(8, task.seq_len, task.vocab_size)
    m = task.metrics(logits, b)
    assert 0.0 <= m["accuracy"] <= 1.0 and m["loss"] > 0
    perfect = torch.nn.functional.one_hot(b.targets, task.vocab_size).float() * 50
    assert task.metrics(perfect, b)["accuracy"] == 1.0


# --- solvability -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name,overrides",
    [
        ("induction_heads", {}),
        ("associative_recall", {}),
        ("associative_recall", {"num_queries": 4}),
        ("associative_recall", {"num_pairs": 3, "num_queries": 3}),
        ("selective_copy", {}),
        ("selective_copy", {"num_copy": 4, "seq_len": 40}),
    ],
)
def test_solver_gets_full_accuracy(name, overrides):
    task = build_task(name, **overrides)
    b = task.sample(BATCH, gen(3))
    pred = SOLVERS[name](task, b.inputs)
    assert torch.equal(pred[b.mask], b.targets[b.mask])
    logits = torch.nn.functional.one_hot(pred, task.vocab_size).float()
    assert task.metrics(logits, b)["accuracy"] == 1.0
    assert task.metrics(logits, b)["seq_accuracy"] == 1.0


# --- layouts -----------------------------------------------------------------------------------

def test_induction_heads_layout():
    task = build_task("induction_heads")
    assert (task.flag_id, task.blank_id) == (10, 11)
    x, y, m = task.sample(256, gen(4))
    L = task.seq_len
    flags = x == task.flag_id
    assert (flags.sum(1) == 2).all() and flags[:, -1].all()
    assert (m.sum(1) == 1).all() and m[:, -1].all()
    first = flags.int().argmax(1)
    assert int(first.max()) <= L - 3
    nxt = x[torch.arange(len(x)), first + 1]
    assert (nxt < task.num_tokens).all() and torch.equal(nxt, y[:, -1])
    # everything else is blank
    assert ((x == task.blank_id).sum(1) == L - 3).all()
    # flag positions and tokens actually vary
    assert first.unique().numel() > 50 and y[:, -1].unique().numel() == task.num_tokens


@pytest.mark.parametrize("num_queries", [1, 3, 5])
def test_associative_recall_layout(num_queries):
    task = build_task("associative_recall", num_queries=num_queries)
    V, N, L = task.num_tokens, task.num_pairs, task.seq_len
    x, y, m = task.sample(256, gen(5))
    keys, vals = x[:, 0 : 2 * N : 2], x[:, 1 : 2 * N : 2]
    assert (keys < V).all() and ((vals >= V) & (vals < 2 * V)).all()
    assert (keys.sort(1).values[:, 1:] != keys.sort(1).values[:, :-1]).all()  # unique keys
    # queries: only after the pair block, exactly num_queries, last position always one
    assert not m[:, : 2 * N].any() and (m.sum(1) == num_queries).all() and m[:, -1].all()
    tail = x[:, 2 * N :]
    assert torch.equal(tail != task.blank_id, m[:, 2 * N :])
    q = x[m].view(-1, num_queries)
    assert (q < V).all()
    assert ((q.sort(1).values[:, 1:] != q.sort(1).values[:, :-1]).all())  # distinct queried keys
    assert ((y[m] >= V) & (y[m] < 2 * V)).all()


def test_associative_recall_rejects_bad_sizes():
    # hydra wraps the constructor's ValueError in an InstantiationException
    with pytest.raises(Exception, match="num_pairs <= num_tokens"):
        build_task("associative_recall", num_pairs=6)  # keys must be unique among 5
    with pytest.raises(Exception, match="num_queries <= num_pairs"):
        build_task("associative_recall", num_queries=6)


def test_selective_copy_layout():
    task = build_task("selective_copy")
    assert (task.blank_id, task.marker_id, task.context_len) == (10, 11, 112)
    x, y, m = task.sample(256, gen(6))
    C = task.context_len
    assert (x[:, C:] == task.marker_id).all() and not (x[:, :C] == task.marker_id).any()
    assert ((x[:, :C] != task.blank_id).sum(1) == task.num_copy).all()
    assert m[:, C:].all() and not m[:, :C].any()
    assert ((y[:, C:] >= 0) & (y[:, C:] < task.num_tokens)).all()
    # positions vary across the whole context
    occupied = (x[:, :C] != task.blank_id).any(0)
    assert occupied.float().mean() > 0.9


# --- LDS -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 7])
def test_make_system_spectrum(seed):
    A, B, C, D = make_system(seed)
    assert A.dtype == torch.float64 and A.shape == (256, 256)
    assert B.shape == (256, 5) and C.shape == (5, 256) and D.shape == (5, 5)
    assert torch.equal(A, A.T)
    assert abs(float(torch.linalg.eigvalsh(A).abs().max()) - 0.99) < 1e-6
    assert torch.count_nonzero(D) == 0
    A2, B2, C2, D2 = make_system(seed, use_d=True)
    assert torch.equal(A, A2) and torch.equal(B, B2) and torch.equal(C, C2) and D2.abs().sum() > 0
    assert not torch.equal(A, make_system(seed + 1)[0])
    assert abs(float(torch.linalg.eigvalsh(make_system(seed, rho=0.5)[0]).abs().max()) - 0.5) < 1e-6


def test_lds_system_seed_selects_system():
    a, b = build_task("lds", system_seed=3), build_task("lds", system_seed=4)
    assert not torch.equal(a.A, b.A)
    assert torch.equal(a.A, build_task("lds", system_seed=3).A)
    g = a.sample(4, gen(0))
    h = b.sample(4, gen(0))
    assert torch.equal(g.inputs, h.inputs) and not torch.allclose(g.targets, h.targets)


@pytest.mark.parametrize("use_d", [False, True])
def test_lds_targets_match_direct_simulation(use_d):
    task = build_task("lds", use_d=use_d, system_seed=2)
    x, y, m = task.sample(8, gen(7))
    ref = direct_lds(task, x)
    assert torch.allclose(y.double(), ref, rtol=1e-5, atol=1e-5)
    # causality: changing u at position s leaves targets before s unchanged
    x2 = x.clone()
    x2[:, 50] += 1.0
    y2 = task.simulate(x2.double())
    assert torch.allclose(y2[:, :50], y[:, :50].double(), atol=1e-5)
    assert not torch.allclose(y2[:, 50], y[:, 50].double(), atol=1e-3)
    # first target y_1 = C B u_0 (+ D u_0)
    first = x[:, 0].double() @ (task.C @ task.B + task.D).T
    assert torch.allclose(y[:, 0].double(), first, atol=1e-5)


def test_lds_noise_options():
    clean = build_task("lds").sample(8, gen(8))
    w = build_task("lds", noise_w=0.1).sample(8, gen(8))
    z = build_task("lds", noise_zeta=0.1).sample(8, gen(8))
    for noisy in (w, z):
        assert torch.equal(noisy.inputs, clean.inputs)  # noise drawn after u
        assert not torch.allclose(noisy.targets, clean.targets, atol=1e-3)
    # observation noise has the requested scale
    assert abs(float((z.targets - clean.targets).std()) - 0.1) < 0.01
    # process noise matches the direct recursion with that noise
    task = build_task("lds", noise_w=0.1)
    g = gen(8)
    u = torch.randn(8, 100, 5, generator=g, dtype=torch.float64)
    wn = 0.1 * torch.randn(8, 100, 256, generator=g, dtype=torch.float64)
    assert torch.allclose(w.targets.double(), direct_lds(task, u, wn), rtol=1e-5, atol=1e-5)


def test_lds_loss_is_mse():
    task = build_task("lds")
    b = task.sample(4, gen(0))
    assert task.loss(b.targets, b) == 0
    m = task.metrics(torch.zeros_like(b.targets), b)
    assert m["mse"] == pytest.approx(float(b.targets.pow(2).sum(-1).mean()), rel=1e-5)


# ------------------------------------------------------------------ associative recall layouts (Figure 5 variants)
@pytest.mark.parametrize("layout, queries", [("front", 1), ("adjacent", 1), ("zoology", 5), ("safari", 1)])
def test_associative_recall_layouts_are_answerable_from_the_context(layout, queries):
    """Every scored position holds a key whose value appears right after that key earlier in the
    sequence (so a causal model can answer), and the layout puts things where it says."""
    from tasks.associative_recall import AssociativeRecall

    t = AssociativeRecall(layout=layout, num_queries=queries)
    b = t.sample(64, torch.Generator().manual_seed(3))
    again = t.sample(64, torch.Generator().manual_seed(3))
    assert torch.equal(b.inputs, again.inputs) and torch.equal(b.targets, again.targets)
    assert b.inputs.shape == (64, 32) and int(b.inputs.max()) < t.vocab_size
    assert (b.mask.sum(1) == queries).all()
    for x, y, m in zip(b.inputs.tolist(), b.targets.tolist(), b.mask.tolist()):
        for p in [i for i, s in enumerate(m) if s]:
            key, value = x[p], y[p]
            assert key < t.num_tokens and t.num_tokens <= value < 2 * t.num_tokens
            assert any(x[j] == key and x[j + 1] == value for j in range(p - 1)), (layout, x, p)
    if layout == "front":
        assert (b.inputs[:, :10:2] < 5).all() and b.mask[:, 31].all()
    if layout == "adjacent":
        assert (b.inputs[:, :21] == t.blank_id).all() and (b.inputs[:, 21:31:2] < 5).all() and b.mask[:, 31].all()
    if layout == "zoology":  # all five keys queried once, at even offsets after the pairs
        pos = b.mask.nonzero()[:, 1].view(64, 5)
        assert ((pos - 10) % 2 == 0).all() and (pos >= 10).all()
        assert torch.equal(b.inputs.gather(1, pos).sort(1).values, b.inputs[:, :10:2].sort(1).values)
    if layout == "safari":
        assert (b.inputs[:, 30] == t.blank_id).all() and (b.inputs[:, :30:2] < 5).all()


def test_associative_recall_front_layout_is_the_committed_task():
    """Adding layouts did not move the default's random stream (Figure 5's numbers stay the same)."""
    from tasks.associative_recall import AssociativeRecall

    b = AssociativeRecall().sample(2, torch.Generator().manual_seed(0))
    assert b.inputs[0].tolist()[:10] == [2, 7, 3, 8, 4, 9, 0, 5, 1, 6] and b.inputs[0, 31] == 4 and b.targets[0, 31] == 9


@pytest.mark.parametrize("kwargs, message", [
    (dict(layout="middle"), "valid layouts: front, adjacent, zoology, safari"),
    (dict(layout="zoology", num_queries=1), "num_queries must equal num_pairs"),
    (dict(layout="adjacent", num_queries=2), "one query"),
])
def test_associative_recall_bad_layouts_are_refused(kwargs, message):
    from tasks.associative_recall import AssociativeRecall

    with pytest.raises(ValueError, match=message):
        AssociativeRecall(**kwargs)
