"""benchmarks/speed.py on a tiny run: the CSV has the documented columns (no timing asserted)."""
import csv
import json
import pathlib

import pytest
import torch

from benchmarks import speed
from benchmarks.config import ConfigError, compose


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(tmp_path, *extra):
    return compose([
        "experiment=speed", "profile=smoke", f"paths.results={tmp_path}/res", f"paths.plots={tmp_path}/plots",
        f"paths.runs={tmp_path}/runs", "progress=false", "device=cpu", "profile.speed.warmup=1",
        "profile.speed.repeats=1", "profile.speed.min_repeats=1",
        "profile.speed.train.settings_only=[fig2_lds]",
        "profile.speed.train.models_only=[stu_plain,stu_fast,transformer_moe]",
        "profile.speed.sweep.lengths=[16,32]", "profile.speed.sweep.only=[stu-kernel-freq,stu-filters,attention-sdpa,"
        "attention-flash_attn,sliding_attention-softcap-math]",
        "profile.speed.sweep.variants.sliding_attention-softcap-math.max_len=8",
        "profile.speed.train.settings.fig2_lds.batch=4", "profile.speed.train.settings.fig2_lds.seq_len=32", *extra])


def test_tiny_run_writes_documented_files(tmp_path):
    out = speed.run(_cfg(tmp_path))
    with open(out["csv"]) as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        assert reader.fieldnames == speed.COLUMNS
    sections = {r["section"] for r in rows}
    assert sections == {"train", "mixer"}
    train = {r["label"]: r for r in rows if r["section"] == "train"}
    assert set(train) == {"stu_plain", "stu_fast", "transformer_moe"}
    assert all(r["status"] == "ok" and r["pass"] == "train_step" for r in train.values())
    assert "stu_form=filters" in train["stu_plain"]["backend"]
    assert "stu_kernel=freq" in train["stu_fast"]["backend"]
    mix = [r for r in rows if r["section"] == "mixer"]
    ok = [r for r in mix if r["status"] == "ok"]
    assert {r["pass"] for r in ok} == {"fwd", "fwd_bwd"}
    assert {int(r["seq_len"]) for r in ok} == {16, 32}
    assert all(r["slope"] != "" and r["slope_range"] == "16-32" for r in ok)
    # a variant this machine lacks is a row, not a crash; max_len gives skipped rows
    if not torch.cuda.is_available():
        assert any(r["label"] == "attention-flash_attn" and r["status"] == "unavailable" for r in mix)
    assert any(r["label"] == "sliding_attention-softcap-math" and r["status"] == "skipped" for r in mix)
    for r in rows:  # every row records where and how it was made
        for k in ("device", "device_name", "threads", "torch", "git_commit", "profile", "date"):
            assert r[k] != "", k
        assert r["status"] in ("ok", "oom", "error", "unavailable", "skipped")
    assert float(train["transformer_moe"]["saved_mb"]) > 0
    rec = json.loads(pathlib.Path(out["json"]).read_text())
    assert rec["columns"] == speed.COLUMNS and rec["profile"] == "smoke" and rec["versions"]["torch"]
    assert rec["train_optimizers"]["fig2_lds"]["name"] == "rmsprop"  # the LDS task's default, as the runs
    assert rec["git_commit"] and rec["device_info"]["device"] == "cpu" and rec["wall_time_s"] > 0
    res, plots = tmp_path / "res" / "speed" / "smoke", tmp_path / "plots" / "speed" / "smoke"
    assert pathlib.Path(out["csv"]) == res / "speed.csv" and pathlib.Path(out["json"]) == res / "record.json"
    assert pathlib.Path(out["png"]) == plots / "speed.png"
    md = pathlib.Path(out["md"]).read_text()
    assert "Train step: fig2_lds" in md and "plain (per-filter) path" in md and rec["git_commit"] in md
    assert out["png"] is not None and pathlib.Path(out["png"]).stat().st_size > 0


def test_failure_is_a_row(tmp_path):
    out = speed.run(_cfg(tmp_path, "profile.speed.train.enabled=false", "profile.speed.sweep.only=[broken]",
                         "+profile.speed.sweep.variants.broken={mixer: stu, overrides: {form: nonsense}}"))
    rows = list(csv.DictReader(open(out["csv"])))
    assert rows and rows[0]["status"] == "error" and "nonsense" in rows[0]["error"]
    assert all(r["status"] in ("error", "skipped") for r in rows)


def test_a_used_up_time_budget_skips_the_remaining_cells(tmp_path):
    # the budget is checked before each cell: a tiny one leaves the first cell run and every later
    # cell a "skipped" row naming the budget (the length sweep once crashed on such a row)
    out = speed.run(_cfg(tmp_path, "profile.speed.time_budget_s=1e-9"))
    rows = list(csv.DictReader(open(out["csv"])))
    mix = [r for r in rows if r["section"] == "mixer" and r["status"] != "unavailable"]
    assert mix and all(r["status"] == "skipped" for r in mix)
    assert any("time budget" in r["error"] for r in mix)
    assert pathlib.Path(out["md"]).exists()


@pytest.mark.parametrize("override, message", [
    ("profile.speed.dtypes=[float8]", "valid:"),
    ("profile.speed.repeats=0", "repeats must be >= 1"),
    ("profile.speed.train.models_only=[nope]", "valid:"),
    ("profile.speed.train.settings.fig2_lds.models.stu_fast.model=nope", "valid models:"),
    ("profile.speed.train.settings.fig2_lds.task=nope", "valid tasks:"),
    ("profile.speed.sweep.only=[nope]", "valid:"),
    ("device=tpu", "valid devices:"),
])
def test_bad_values_fail_before_any_file(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        speed.run(_cfg(tmp_path, override))
    assert not (tmp_path / "res").exists() and not (tmp_path / "plots").exists()


def test_fit_slope_upper_half():
    pts = [(256, 1.0), (512, 1.0), (1024, 1.0), (2048, 2.0), (4096, 4.0), (8192, 8.0)]
    slope, rng = speed.fit_slope(pts)
    assert slope == pytest.approx(1.0) and rng == "2048-8192"
    assert speed.fit_slope([(256, 1.0)]) == (None, "")


def test_flex_attention_variant_equals_attention():
    pytest.importorskip("torch.nn.attention.flex_attention")
    from models.attention import Attention

    for window, cap in [(None, None), (5, 50.0)]:
        ref = Attention(16, 32, num_heads=4, window=window, softcap=cap, use_flash_attn=False)
        flex = speed.FlexAttention(16, 32, num_heads=4, window=window, softcap=cap)
        flex.load_state_dict(ref.state_dict())
        x = torch.randn(2, 32, 16)
        try:
            with torch.no_grad():
                y = flex(x)
        except Exception as e:  # eager flex attention on CPU is not in every torch build
            pytest.skip(f"flex_attention does not run here: {e}")
        with torch.no_grad():
            assert torch.allclose(y, ref(x), atol=1e-5)
