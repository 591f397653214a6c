"""Smoke tests of the centralized/sketched benchmark sweeps (eagle_dist.bench.kappa, .sketch and
.gemm): each runs its real pipeline at tiny sizes (``smoke=True``) and must write CSV + PNG +
summary.md whose numbers are sane. The full sweeps live in benchmarks/ (see benchmarks/README.md)."""
from __future__ import annotations

import math
import os

import pytest

from eagle_dist.bench.kappa import kappa_sweep
from eagle_dist.bench.report import command_line, markdown_table, read_csv, write_csv
from eagle_dist.bench.sketch import sketch_sweep


def _check_outputs(res, csv_names, png_names):
    for name in csv_names + png_names + ["summary.md"]:
        path = os.path.join(res.out, name)
        assert os.path.isfile(path) and os.path.getsize(path) > 0, name
    for name in png_names:
        with open(os.path.join(res.out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    md = open(os.path.join(res.out, "summary.md")).read()
    assert res.command in md and res.command.startswith("eagle-dist bench ")
    assert "Machine:" in md and "cores" in md


def _finite(rows, *cols):
    for r in rows:
        for c in cols:
            v = float(r[c])
            assert math.isfinite(v), (c, r)


def test_kappa_sweep_smoke(tmp_path):
    res = kappa_sweep(out=str(tmp_path / "kappa"), smoke=True, progress=False)
    _check_outputs(res, ["kappa.csv", "kappa_summary.csv", "kappa_curves.csv"],
                   ["kappa_error_vs_iteration.png", "kappa_error_vs_time.png",
                    "kappa_summary.png"])
    rows = read_csv(os.path.join(res.out, "kappa.csv"))
    assert {r["method"] for r in rows} == {"eagle", "cg", "gd", "lsmr", "lstsq"}
    _finite(rows, "iterations", "time_s", "final_error")
    assert all(int(r["iterations"]) > 0 and float(r["time_s"]) > 0 for r in rows)
    # the CSV's claims are true: "reached" means the recorded final error is below the target
    for r in rows:
        assert (r["reached"] == "True") == (float(r["final_error"]) <= 1e-10), r
    eagle = [r for r in rows if r["method"] == "eagle"]
    assert all(r["reached"] == "True" for r in eagle)               # EAGLE reaches 1e-10
    assert all(int(r["iterations"]) <= 100 for r in eagle)
    assert res.headline["cg_over_eagle_iterations"] > 1


@pytest.mark.slow          # ~10 s; the kappa smoke covers the shared sweep machinery in the default suite
def test_sketch_sweep_smoke(tmp_path):
    res = sketch_sweep(out=str(tmp_path / "sketch"), smoke=True, progress=False)
    _check_outputs(res, ["sketch.csv", "sketch_summary.csv", "sketch_speedup.csv"],
                   ["sketch_summary.png", "sketch_error_vs_iteration.png",
                    "sketch_error_vs_time.png"])
    rows = read_csv(os.path.join(res.out, "sketch.csv"))
    assert {int(r["r"]) for r in rows} == {4, 8, 16, 32}             # d/8, d/4, d/2, d at d = 32
    assert {r["kind"] for r in rows} == {"sample", "orthonormal"}
    assert {r["method"] for r in rows} == {"eagle", "sgd"}
    _finite(rows, "iterations", "time_s", "time_per_iter_ms", "final_error")
    assert all(int(r["iterations"]) > 0 for r in rows)
    for r in rows:
        assert (r["reached"] == "True") == (float(r["final_error"]) <= 1e-2), r
    # unsketched EAGLE (r = d) reaches 1e-2 quickly
    assert all(r["reached"] == "True" for r in rows if r["method"] == "eagle" and r["r"] == "32")


def test_gemm_sweep_smoke_via_cli(tmp_path):
    from eagle_dist.cli import main
    out = tmp_path / "gemm"
    assert main(["bench", "gemm", "--smoke", "--no-progress", "--out", str(out)]) == 0
    rows = read_csv(os.path.join(out, "gemm_summary.csv"))
    assert {(r["dtype"], int(r["n"])) for r in rows} == {
        (t, n) for t in ("float64", "float32") for n in (48, 96)}
    _finite(rows, "gemm_ms", "gemm_gflops", "floor_ms", "kernel_ms", "kernel_ratio",
            "solve_iter_ms", "solve_ratio")
    samples = read_csv(os.path.join(out, "gemm.csv"))
    for r in rows:
        assert float(r["kernel_ms"]) > 0 and float(r["gemm_gflops"]) > 0
        # the summary's ratio, recomputed from the raw timed samples (independently of the
        # summary's own columns): best kernel time over 1.5 x the best GEMM time of that size
        mine = [x for x in samples if x["dtype"] == r["dtype"] and x["n"] == r["n"]]
        best = {op: min(float(x["seconds"]) for x in mine if x["op"] == op)
                for op in ("kernel", "gemm")}
        assert math.isclose(float(r["kernel_ratio"]), best["kernel"] / (1.5 * best["gemm"]),
                            rel_tol=1e-9)
    # smoke sizes are below kernels.SYMMETRIC_MIN_DIM, so no SYRK samples: the kernel is torch's
    assert {s["op"] for s in samples} == {"gemm", "gram_AtA", "kernel", "kernel_gemm_only",
                                          "solve_iteration"}
    assert os.path.isfile(out / "gemm_ratio.png") and os.path.isfile(out / "summary.md")


def test_bench_cli_registers_centralized_sweeps():
    from eagle_dist.cli import main
    for sweep in ("kappa", "sketch", "gemm"):
        with pytest.raises(SystemExit) as exc:
            main(["bench", sweep, "--help"])
        assert exc.value.code == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(kappas=[0.5]), "kappas"),
    (dict(methods=["nope"]), "methods"),
    (dict(runs=0), "runs"),
    (dict(target=0.0), "target"),
])
def test_kappa_sweep_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kappa_sweep(out=str(tmp_path), smoke=True, progress=False, **kwargs)


def test_sketch_sweep_rejects_bad_sketch_size(tmp_path):
    with pytest.raises(ValueError, match="sketch size"):
        sketch_sweep(out=str(tmp_path), smoke=True, progress=False, sketch_sizes=[0])


def test_report_helpers_round_trip(tmp_path):
    rows = [{"method": "eagle", "iterations": 16, "error": 1e-12},
            {"method": "cg", "iterations": 670, "extra": True}]
    path = write_csv(rows, str(tmp_path / "x.csv"))
    back = read_csv(path)
    assert [r["method"] for r in back] == ["eagle", "cg"]
    assert float(back[0]["error"]) == 1e-12 and back[1]["error"] == ""
    assert markdown_table(rows, ["method", "iterations"]).splitlines()[2] == "| eagle | 16 |"
    cmd = command_line("eagle-dist bench kappa", {"kappas": [1e2, 1e4], "target": 1e-10}, ["smoke"])
    assert cmd == "eagle-dist bench kappa --kappas 1e2,1e4 --target 1e-10 --smoke"


def test_train_throughput_bench_via_cli(tmp_path, capsys):
    """`bench train` times a real (tiny) training run from the run's own clock."""
    from eagle_dist.cli import main
    out = tmp_path / "train"
    assert main(["bench", "train", "--regimes", "compute_limited", "--steps", "6", "--warmup", "2",
                 "--layouts", "1thread", "--out", str(out)]) == 0
    rows = read_csv(os.path.join(out, "throughput.csv"))
    assert [(r["regime"], r["layout"]) for r in rows] == [("compute_limited", "1thread")]
    assert float(rows[0]["steps_per_s"]) > 0 and float(rows[0]["first_s"]) >= 0
    assert "--warmup 2" in (out / "summary.md").read_text()
    with pytest.raises(SystemExit) as exc:
        main(["bench", "train", "--layouts", "gpu", "--out", str(out)])
    assert exc.value.code == 2 and "unknown layout 'gpu'" in capsys.readouterr().err


def test_noise_comparison_via_cli(tmp_path):
    """`bench noise` on two briefly trained checkpoints (noiseless, noisy): both test sets, both
    targets, the extraction of each and the weight differences; bad pairs are refused."""
    from eagle_dist.cli import main
    from eagle_dist.model.config import load_train_config
    from eagle_dist.model.train import train_loop
    ck = {}
    for label, var in (("clean", 0.0), ("noisy", 0.01)):
        cfg = load_train_config("unconstrained", [
            "optim.steps=30", "optim.batch=128", "eval.test_size=64", "eval.every=30",
            "run.threads=1", f"data.noise_var={var}", f"run.dir={tmp_path / label}"])
        train_loop(cfg)
        ck[label] = str(tmp_path / label / "final.pt")
    out = tmp_path / "noise"
    assert main(["bench", "noise", "--pair", f"{ck['clean']}:{ck['noisy']}", "--prompts", "40",
                 "--out", str(out)]) == 0
    rows = read_csv(os.path.join(out, "noise.csv"))
    assert {(r["model"], r["test_set"]) for r in rows} == {
        (m, s) for m in ("noiseless-trained", "noisy-trained") for s in ("clean", "noisy")}
    for r in rows:
        _finite([r], "D_mean", "D_median", "Dhat_mean", "Dhat_median", "zero_D", "zero_Dhat")
        if r["test_set"] == "clean":              # noiseless prompts: D = B A⁺ C
            assert math.isclose(float(r["D_mean"]), float(r["Dhat_mean"]), rel_tol=1e-6)
        else:                                      # noise makes them differ
            assert float(r["zero_D"]) != float(r["zero_Dhat"])
    w = read_csv(os.path.join(out, "weights.csv"))
    assert len(w) == 4 and all(float(r["qk_rel_diff"]) > 0 for r in w)
    assert "## Extraction" in (out / "summary.md").read_text()
    with pytest.raises(SystemExit):                # reversed: the first must be noiseless
        main(["bench", "noise", "--pair", f"{ck['noisy']}:{ck['clean']}", "--out", str(out)])
