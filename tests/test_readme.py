"""The README's examples run as written and print the figures the README states."""
from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import pytest

from eagle_dist.cli import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _block(heading: str, lang: str) -> str:
    section = README[README.index(heading):]
    start = section.index(f"```{lang}\n") + len(f"```{lang}\n")
    return section[start:section.index("```", start)]


def test_install_lines_are_the_ci_command():
    """The README opens with exactly two set-up commands; .ci/run runs the second (tests)."""
    first = README[README.index("```bash\n") + 8:]
    lines = first[:first.index("```")].strip().splitlines()
    assert len(lines) == 2
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines[0]
    assert lines[0].endswith("eagle-dist demo")
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert lines[1] in ci


# `name = ...   # <status>, <N> iterations|rounds[, error < X]`
FIGURE = re.compile(r"^(\w+)(?:, (\w+))? = .*#\s*(converged|inexact|max_iterations|unverified),"
                    r" (\d+) (iterations|rounds)(?:, error < ([0-9.e+-]+))?")


def test_python_block_runs_and_prints_the_stated_figures(tmp_path, monkeypatch):
    code = _block("## Python", "python")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, "README.md", "exec"), ns)     # noqa: S102 - the README's own code
    checked = 0
    # a statement may span lines: join continuation lines to their first line
    for stmt in re.split(r"\n(?=\S)", code):
        flat = " ".join(stmt.split("\n"))
        m = FIGURE.match(flat)
        if not m:
            continue
        name = m.group(2) or m.group(1)
        res = ns[name]
        assert res.status.value == m.group(3), (name, res.status)
        assert res.iterations == int(m.group(4)), (name, res.iterations)
        if m.group(6):
            assert res.error < float(m.group(6)), (name, res.error)
        checked += 1
    assert checked >= 8
    import numpy as np
    xs = np.linalg.lstsq(ns["A_usual"], ns["b"], rcond=None)[0]
    for key in ("x", "x4"):                                  # "agree ... to 2e-15"
        assert np.linalg.norm(ns[key] - xs) / np.linalg.norm(xs) < 5e-15
    gap = np.linalg.norm(ns["xp"] - xs) / np.linalg.norm(xs)  # "5e-7 away here"
    assert 1e-7 < gap < 1e-6


CLI = [line.split("#")[0].strip() for line in _block("## Command line", "bash").splitlines()
       if line.startswith("eagle-dist ")]


@pytest.mark.parametrize("line", CLI, ids=[" ".join(c.split()[1:4]) for c in CLI])
def test_cli_example_runs_as_written(line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                               # runs/… land in a scratch folder
    monkeypatch.setenv("EAGLE_DIST_CACHE", str(tmp_path / "cache"))   # auto's cost model
    argv = shlex.split(line)[1:]
    try:
        code = main(argv)
    except SystemExit as exc:                                 # --help exits through argparse
        code = exc.code
    assert code == 0, line


def test_learned_kernel_block_prints_what_it_says(capsys, monkeypatch):
    """The transformer section's Python block (the committed distributed checkpoint as the
    runtime's kernel) runs from the repository root and prints the figures in its comment."""
    code = _block("## Transformers that discover EAGLE", "python")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    exec(compile(code, "README.md", "exec"), {})                # noqa: S102 - the README's code
    printed = capsys.readouterr().out.split()
    stated = re.search(r"# (\w+) (\d+) (\d+) ([0-9.]+)…", code).groups()
    assert printed[:3] == list(stated[:3])
    assert printed[3].startswith(stated[3])
