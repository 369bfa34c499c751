"""The generated results page (results/README.md): up to date with the committed results, made from
their records, every claim of every committed figure with its verdict, and linked from the README."""
from __future__ import annotations

import json
import pathlib

from benchmarks import results_page

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_committed_results_page_is_up_to_date():
    assert results_page.main(["--check"]) == 0, "run: make results-page"


def test_every_committed_figure_claim_has_its_verdict_on_the_page():
    page = (ROOT / "results" / "README.md").read_text()
    from benchmarks.report import experiment_report_config

    for records in sorted((ROOT / "results").glob("*/*/records.jsonl")):
        name, profile = records.parent.parent.name, records.parent.name
        rep = experiment_report_config(name)
        if rep.get("kind", "curves") != "curves" or not rep.get("checks"):
            continue
        section = page.split(f"(`{name}`)", 1)[1].split(f"### {profile} profile", 1)[1]
        section = section.split("\n## ", 1)[0].split("\n### ", 1)[0]  # this profile's subsection only
        assert "| check | verdict | evidence |" in section, name
        n_checks = sum(1 for line in section.splitlines() if line.startswith("| ") and (" holds |" in line or "does not hold" in line or "not checked" in line))
        assert n_checks == len(rep["checks"]), (name, profile, n_checks)
        # the numbers come from the records: each model's mean is on the page
        recs = [json.loads(line) for line in records.read_text().splitlines() if line.strip()]
        assert f"{len(recs)} runs;" in section


def test_the_readme_links_the_results_page():
    assert "](results/README.md)" in (ROOT / "README.md").read_text()


def test_every_committed_gpu_result_is_on_the_page_from_its_record():
    page = (ROOT / "results" / "README.md").read_text()
    recs = sorted((ROOT / "results" / "gpu").glob("*/*/record.json"))
    if not recs:  # a checkout with no GPU results yet: the page has no GPU section
        assert "## On a GPU" not in page
        return
    gpu = page.split("## On a GPU (`make gpu-check`)", 1)[1].split("\n## ", 1)[0]
    for path in recs:
        name, profile = path.parent.parent.name, path.parent.name
        assert f"(`{name}`), {profile} profile" in gpu, name
        commit = str(json.loads(path.read_text()).get("git_commit", ""))[:12]
        assert commit and f"commit {commit}" in gpu, name
