"""The paper-figure sweeps (``eagle-dist bench rankdef | large | distributions | stepsize | noisy
| seedavg``, paper Figs. 6(3), 20, 19, 22, 21, 12) and the paper's Fig. 19 data definitions:
tiny end-to-end runs whose files and numbers are checked against independent NumPy
references. The full runs live in benchmarks/results/<name>/ (benchmarks/results/PAPER.md)."""
from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch

from eagle_dist.bench.report import read_csv
from eagle_dist.data import DISTRIBUTIONS, controlled, distribution

TRAIN = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "results", "train")


def _files(res, names):
    for name in names + ["summary.md"]:
        path = os.path.join(res.out, name)
        assert os.path.isfile(path) and os.path.getsize(path) > 0, name
        if name.endswith(".png"):
            with open(path, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    md = open(os.path.join(res.out, "summary.md")).read()
    assert res.command in md and res.command.startswith("eagle-dist bench ")


# ---- the paper's Fig. 19 definitions ------------------------------------------------------------
def test_paper_definitions_against_their_formulas():
    n = 120
    # the same stream: the paper's SVD construction is the code's divided by √s, Gaussian equal
    for kind, factor in (("svd", 1 / math.sqrt(n)), ("gaussian", 1.0)):
        a = distribution(kind, n, n, seed=3)
        b = distribution(kind, n, n, seed=3, definition="paper")
        np.testing.assert_allclose(b.A, factor * a.A, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(b.D_true, factor * a.D_true, rtol=1e-12, atol=1e-15)
    # unit-variance factors give entries of variance 1 (the code's t(4) has variance 2 per factor)
    for kind in ("student_t", "sparse_rademacher"):
        X = distribution(kind, n, n, seed=0, definition="paper")
        X = X.completed(X.D_true)
        assert abs(X.var() - 1.0) < 0.15, (kind, X.var())
    assert distribution("student_t", n, n, seed=0).A.var() > 3.0
    # correlated rows: neighbouring rows of X correlate with ρ = 0.8, rows 10 apart with 0.8^10
    P = distribution("correlated", n, n, seed=0, definition="paper")
    X = P.completed(P.D_true)

    def corr(k):
        return float((X[:-k] * X[k:]).mean() / (X * X).mean())
    assert abs(corr(1) - 0.8) < 0.08 and abs(corr(10) - 0.8 ** 10) < 0.08
    # clustered: block-constant, at most 5 distinct rows and columns, rank 5, consistent
    P = distribution("clustered", 60, 60, seed=1, definition="paper")
    X = P.completed(P.D_true)
    assert np.unique(X.round(12), axis=0).shape[0] <= 5
    assert np.unique(X.round(12), axis=1).shape[1] <= 5
    assert np.linalg.matrix_rank(X) == 5 == P.meta["rank"]
    W = P.B @ np.linalg.pinv(P.A, rcond=1e-10)
    np.testing.assert_allclose(W @ P.C, P.D_true, atol=1e-10)
    # every kind builds; the default and its metadata are untouched
    for kind in DISTRIBUTIONS:
        p = distribution(kind, 30, 20, 2, 3, rank=8, seed=2, definition="paper")
        assert p.A.shape == (30, 20) and p.meta["definition"] == "paper"
        assert "definition" not in distribution(kind, 30, 20, 2, 3, rank=8, seed=2).meta
    with pytest.raises(ValueError, match="definition"):
        distribution("svd", 10, 10, definition="Paper")


# ---- scoring against a known truth, the ridge limit ---------------------------------------------
def test_truth_problem_and_ridge_limit():
    from eagle_dist import solve
    from eagle_dist.bench.paper_common import against_truth
    from eagle_dist.bench.rankdef import ridge_limit_error
    clean = controlled(20, 20, kappa=10.0, seed=4)
    noisy = controlled(20, 20, kappa=10.0, noise=0.01, seed=4)
    np.testing.assert_allclose(noisy.A, clean.A, atol=0.1)       # same A₀ under the noise
    scored = against_truth(noisy, clean.D_true)
    res = solve(scored, "lstsq")
    want = np.linalg.norm(noisy.B @ np.linalg.pinv(noisy.A) @ noisy.C - clean.D_true) \
        / np.linalg.norm(clean.D_true)
    assert res.error == pytest.approx(want, rel=1e-8)
    with pytest.raises(ValueError, match="shape"):
        against_truth(noisy, np.zeros((3, 3)))
    # ridge limit B Aᵀ(AAᵀ + λI)⁻¹ C at ‖A‖₂ = 1, by a dense solve
    p = controlled(16, 16, kappa=1e2, rank=9, seed=0)
    s = np.linalg.norm(p.A, 2)
    A, B = p.A / s, p.B / s
    ridge = B @ A.T @ np.linalg.solve(A @ A.T + 1e-3 * np.eye(16), p.C)
    ref = p.B @ np.linalg.pinv(p.A) @ p.C
    assert ridge_limit_error(p, 1e-3) == pytest.approx(
        np.linalg.norm(ridge - ref) / np.linalg.norm(ref), rel=1e-8)


# ---- sweeps, tiny -------------------------------------------------------------------------------
def test_rankdef_and_large_smoke(tmp_path):
    from eagle_dist.bench.rankdef import rank_sweep
    res = rank_sweep(out=str(tmp_path / "rd"), n=16, d=16, ranks=[16, 6], runs=1,
                     methods=["eagle", "cg", "lstsq"], max_iter=200, eagle_max_iter=60,
                     progress=False, smoke=True)
    _files(res, ["rankdef.csv", "rankdef_summary.csv", "rankdef_problems.csv",
                 "rankdef_error_vs_iteration.png", "rankdef_iterations_vs_rank.png"])
    rows = read_csv(os.path.join(res.out, "rankdef.csv"))
    for r in rows:
        assert (r["reached"] == "True") == (float(r["final_error"]) <= 1e-10), r
    assert all(r["reached"] == "True" for r in rows if r["method"] == "eagle")
    probs = read_csv(os.path.join(res.out, "rankdef_problems.csv"))
    assert [int(p["rank"]) for p in probs] == [16, 6]
    assert all(float(p["ridge_limit_error"]) > 1e-4 for p in probs)   # the ridge is biased
    with pytest.raises(ValueError, match="ranks"):
        rank_sweep(out=str(tmp_path / "x"), n=8, d=8, ranks=[9], smoke=True, progress=False)
    # Fig. 20 is the same sweep at n = d = 1920 ("large"): registered with its own defaults
    import argparse
    from eagle_dist.bench.rankdef import LARGE_FULL, add_parser
    sub = argparse.ArgumentParser().add_subparsers(dest="sweep")
    add_parser(sub)
    args = sub.choices["large"].parse_args(["--ranks", "1920"])
    assert args.ranks == [1920] and LARGE_FULL["n"] == 1920 and LARGE_FULL["d"] == 1920


def test_distributions_smoke(tmp_path):
    from eagle_dist.bench.distributions import distribution_sweep
    res = distribution_sweep(out=str(tmp_path / "dist"), kinds=["clustered", "student_t"],
                             n=16, d=16, runs=1, methods=["eagle", "lstsq"], progress=False,
                             smoke=True)
    _files(res, ["distributions.csv", "distributions_problems.csv",
                 "distributions_error_vs_iteration.png"])
    rows = read_csv(os.path.join(res.out, "distributions.csv"))
    assert {r["case"] for r in rows} == {"clustered(paper)", "student_t(paper)"}
    assert all(r["reached"] == "True" for r in rows if r["method"] == "eagle")
    probs = {p["case"]: p for p in read_csv(os.path.join(res.out, "distributions_problems.csv"))}
    assert int(probs["clustered(paper)"]["rank_x"]) == 5
    assert int(probs["clustered(paper)"]["numerical_rank_a"]) == 5


def test_stepsize_kernel_loop_matches_numpy_alg1(tmp_path):
    from eagle_dist.bench.stepsize import best_error, stepsize_sweep
    p = distribution("svd", 8, 8, 2, 2, seed=5, definition="paper")
    # independent NumPy Alg. 1 with per-iteration ρ = 1/‖A‖₂², no rescaling
    A, B, C, D = p.A.copy(), p.B.copy(), p.C.copy(), np.zeros((2, 2))
    ref = p.B @ np.linalg.pinv(p.A) @ p.C
    errs = []
    for _ in range(12):
        rho = 1.0 / np.linalg.norm(A, 2) ** 2
        A, B, C, D = (A - 0.5 * rho * A @ A.T @ A, B - 0.5 * rho * B @ A.T @ A,
                      C - 1.7 * rho * A @ A.T @ C, D + 1.7 * rho * B @ A.T @ C)
        errs.append(np.linalg.norm(D - ref) / np.linalg.norm(ref))
    best, at, got = best_error(p.A, p.B, p.C, ref, eta=0.5, gamma=1.7, iterations=12)
    np.testing.assert_allclose(got, errs, rtol=1e-6, atol=1e-14)
    assert best == pytest.approx(min(errs), rel=1e-6, abs=1e-14) and at == int(np.argmin(errs)) + 1
    res = stepsize_sweep(out=str(tmp_path / "st"), smoke=True)
    _files(res, ["stepsize.csv", "stepsize_summary.csv", "stepsize.png"])
    assert res.headline["joint_best_error_median_at_1"] < 1e-10     # theory constants converge
    with pytest.raises(ValueError, match="outside"):
        stepsize_sweep(out=str(tmp_path / "bad"), factors=[3.1], ratios=[1.0], smoke=True)


def test_noisy_smoke(tmp_path):
    from eagle_dist.bench.noisy import noisy_sweep
    res = noisy_sweep(out=str(tmp_path / "nz"), n=12, d=12, sketch_size=3, eagle_iters=60,
                      gd_iters=30, sketched_eagle_iters=30, sgd_iters=30, smoke=True)
    _files(res, ["noisy.csv", "noisy_summary.csv", "noisy_error_vs_iteration.png"])
    rows = {r["method"]: r for r in read_csv(os.path.join(res.out, "noisy.csv"))}
    # EAGLE converges to the noisy B A⁺ C; its error against the truth is then that of B A⁺ C
    e = rows["eagle"]
    assert float(e["final_error_vs_nystrom"]) < 1e-8
    assert float(e["final_error_vs_truth"]) == pytest.approx(float(e["nystrom_error_vs_truth"]),
                                                             rel=1e-6)
    for r in rows.values():
        assert float(r["best_error_vs_truth"]) <= float(r["final_error_vs_truth"]) + 1e-15


def test_seedavg_sign_alignment_recovers_a_negated_seed(tmp_path):
    from eagle_dist.bench.seedavg import align_sign, pattern_masks, seedavg
    from eagle_dist.model.config import ModelConfig
    src = os.path.join(TRAIN, "unconstrained-seed0", "final.pt")
    if not os.path.isfile(src):
        pytest.fail(f"published checkpoint {src} is missing")
    root = tmp_path / "train"
    (root / "u-seed0").mkdir(parents=True)
    shutil.copy(src, root / "u-seed0" / "final.pt")
    pay = torch.load(src, weights_only=True)
    for key in list(pay["model"]):
        if key.endswith((".wq", ".wv")):        # W_QK → −W_QK and W_VP → −W_VP: the same map
            pay["model"][key] = -pay["model"][key]
    (root / "u-seed1").mkdir()
    torch.save(pay, root / "u-seed1" / "final.pt")
    pay["config"]["model"]["init_std"] = 0.05   # another recipe: must be left out
    (root / "u-seed2").mkdir()
    torch.save(pay, root / "u-seed2" / "final.pt")
    res = seedavg(str(root), str(tmp_path / "out"), ["u"])
    _files(res, ["seedavg_u.png", "seedavg.csv", "seedavg_checks.csv"])
    assert res.summary[0]["seeds"] == "0,1" and "seed 2" in res.summary[0]["excluded"]
    cells = read_csv(os.path.join(res.out, "seedavg.csv"))
    assert all(float(c["std"]) < 1e-6 * (1 + abs(float(c["mean"]))) for c in cells)
    assert all(r["qk_pattern_share_avg"] > 0.8 for r in res.rows)   # EAGLE's diagonal
    assert align_sign(-np.eye(3) + 0.01) == -1.0 and align_sign(np.eye(3)) == 1.0
    mq, mv, is_a = pattern_masks(ModelConfig(regime="distributed"))
    assert mq.shape == (24, 24) and mq.sum() == 18 and is_a.sum() == 18
    assert mv.sum() == 18 + 2 * 9                # A diagonal + C column j → C column j, 3 x 3 pairs


# ---- estimation EAGLE (paper App. D, Fig. 15) ---------------------------------------------------
def test_estimation_w_iteration_is_eagle_and_recovers_pinv(tmp_path):
    """App. D's constants (ρ = 1/(3‖A‖²), η = 1, γ = 3) give EAGLE's iterates (η = 1/3, γ = 1,
    ρ = 1/‖A‖²), and with C = I the literal loop's W converges to B pinv(A) (NumPy)."""
    from eagle_dist.bench.estimation import estimation_sweep, w_iteration
    from eagle_dist.kernels import eagle_update
    rng = np.random.default_rng(0)
    A = rng.standard_normal((12, 12))
    B = rng.standard_normal((2, 12))
    W_star = B @ np.linalg.pinv(A)
    errs = w_iteration(A, B, W_star, 60)
    assert errs[-1] < 1e-11 and errs[0] > 1e-3
    blocks = [torch.tensor(x) for x in (A / np.linalg.norm(A, 2), B / np.linalg.norm(A, 2),
                                        np.eye(12), np.zeros((2, 12)))]
    app_d = eagle_update(*blocks, eta=1.0, gamma=3.0, rho=1.0 / 3.0, filter_order=0)
    eagle = eagle_update(*blocks, eta=1.0 / 3.0, gamma=1.0, rho=1.0, filter_order=0)
    for x, y in zip(app_d, eagle):
        torch.testing.assert_close(x, y, rtol=1e-14, atol=1e-15)
    res = estimation_sweep(out=str(tmp_path / "est"), smoke=True)
    _files(res, ["estimation.csv", "estimation_summary.csv", "estimation_curves.csv",
                 "estimation.png"])
    for s in res.summary:
        assert s["reached_1e_10"] == s["runs"] == 3 and s["final_error_max"] < 1e-12
    with pytest.raises(ValueError, match="kappa"):
        estimation_sweep(out=str(tmp_path / "bad"), kappa=0.5, smoke=True)
