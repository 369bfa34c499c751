"""Tables through pandas (benchmarks/tables.py): Markdown and booktabs LaTeX, and every committed
.tex compiles (with a LaTeX engine when one is installed; character by character where none is)."""
from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

from benchmarks import tables

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEX = sorted(p for p in (ROOT / "results").rglob("*.tex"))
ENGINE = next((e for e in ("pdflatex", "lualatex", "xelatex", "tectonic") if shutil.which(e)), None)


def test_specials_and_the_suites_unicode_are_escaped():
    df = tables.frame(["Model", "Loss"], [["No-change baseline x̂_(t+1) = x_t", "8.5570 ± 0.1 (n=2)"],
                                          ["50% & #1 ~ {a} ^2", "**0.1**"]])
    tex = tables.latex(df, "Table II: Ant_v1", ["- note with `code`"])
    assert r"$\hat{x}$\_(t+1) = x\_t" in tex and r"8.5570 $\pm$ 0.1 (n=2)" in tex
    assert r"50\% \& \#1 \textasciitilde  \{a\} \textasciicircum 2" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\caption{Table II: Ant\_v1}" in tex
    assert r"\begin{tabular}{lr}" in tex  # text left, numbers right
    md = tables.markdown(df).splitlines()
    assert md[1].startswith("|:") and md[1].rstrip().endswith(":|")
    with pytest.raises(ValueError, match="no LaTeX form"):
        tables.escape("漢")


def _lint(text: str) -> list[str]:
    """What would stop pdflatex: non-ASCII characters, and &, %, #, _, ^ unescaped outside math."""
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("%"):
            continue
        if any(ord(c) > 127 for c in line):
            problems.append(f"line {n}: non-ASCII: {line}")
        outside = re.sub(r"\$[^$]*\$", "", line)
        for ch in "%#_^":
            if re.search(rf"(?<!\\){re.escape(ch)}", outside) and not re.search(rf"\\text\w*\s*$", ch):
                if ch == "^" and "\\textasciicircum" in outside and not re.search(r"(?<!\\)\^", outside):
                    continue
                problems.append(f"line {n}: unescaped {ch!r}: {line}")
    return problems


@pytest.mark.parametrize("path", TEX, ids=[str(p.relative_to(ROOT)) for p in TEX])
def test_every_committed_tex_is_latex_safe(path):
    assert not _lint(path.read_text()), _lint(path.read_text())


@pytest.mark.skipif(ENGINE is None, reason="no LaTeX engine (pdflatex, lualatex, xelatex, tectonic) on this machine")
@pytest.mark.parametrize("path", TEX, ids=[str(p.relative_to(ROOT)) for p in TEX])
def test_every_committed_tex_compiles(path, tmp_path):
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1cm,landscape]{geometry}\n"
                   "\\begin{document}\n" + path.read_text() + "\n\\end{document}\n")
    cmd = [ENGINE, doc.name] if ENGINE == "tectonic" else [ENGINE, "-interaction=nonstopmode", "-halt-on-error", doc.name]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:]
