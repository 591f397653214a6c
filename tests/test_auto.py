"""method="auto": the cost model (calibrated, cached, refitted when unreadable), the race between
LSMR and the predicted-best certified method, and the options auto refuses."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eagle_dist import Problem, solve
from eagle_dist.solvers import auto as auto_mod


def _lin(rng, n=40, d=60, nq=3, kappa=10.0):
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    V, _ = np.linalg.qr(rng.standard_normal((d, n)))
    A = (U * np.geomspace(1.0, 1.0 / kappa, n)) @ V.T
    W = rng.standard_normal((nq, n))
    return Problem.from_arrays(A, W @ A + 1e-3 * rng.standard_normal((nq, d)), np.eye(n)), A


def _model(lsmr_per_it: float, direct_s: float = 1.0, eagle_s: float = 2.0):
    """A hand-made model: constant predictions, LSMR's set-up free, iterations ``lsmr_per_it``."""
    key = auto_mod._key(torch.device("cpu"), torch.float64, torch.get_num_threads())
    return auto_mod.CostModel(key, (direct_s, 0.0), (eagle_s, 0.0), (0.0, 0.0, lsmr_per_it, 0.0),
                              direct_qr=(direct_s, 0.0))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EAGLE_DIST_CACHE", str(tmp_path))
    return tmp_path


def test_auto_answer_is_certified_and_matches_pinv(cache, rng, monkeypatch):
    monkeypatch.setattr(auto_mod, "_LOADED", {})
    monkeypatch.setattr(auto_mod, "machine_is_busy", lambda: False)      # so that it is cached
    p, A = _lin(rng)
    res = solve(p, "auto")
    ref = p.B @ np.linalg.pinv(A)
    assert res.converged
    assert np.linalg.norm(res.D - ref) <= 1e-8 * np.linalg.norm(ref)
    info = res.info["auto"]
    assert res.method == f"auto/{info['chosen']}"
    assert info["chosen"].split("-")[0] in auto_mod.CANDIDATES
    assert set(info["predicted_s"]) == {"lstsq", "eagle"}
    assert info["ran"] and info["ran"][-1]["status"] == "converged"
    # the calibration was written to the cache folder, with the key it belongs to
    files = list(cache.glob("cost_model-*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["key"]["device"] == "cpu" and len(data["lsmr"]) == 4
    assert data["direct"][1] >= 0 and data["eagle"][1] >= 0


def test_cached_model_is_reused_and_a_corrupt_one_is_remeasured(cache, monkeypatch):
    dev, dt, th = torch.device("cpu"), torch.float64, 1
    monkeypatch.setattr(auto_mod, "_LOADED", {})
    monkeypatch.setattr(auto_mod, "machine_is_busy", lambda: False)
    calls = []
    monkeypatch.setattr(auto_mod, "calibrate",
                        lambda *a: calls.append(1) or _model(1e-5))
    m1 = auto_mod.cost_model(dev, dt, th)
    m2 = auto_mod.cost_model(dev, dt, th)
    assert len(calls) == 1 and m2.lsmr == m1.lsmr
    path = auto_mod._path(auto_mod._key(dev, dt, th))
    path.write_text("{not json")
    auto_mod._LOADED.clear()                                # a new process reads the file
    auto_mod.cost_model(dev, dt, th)
    assert len(calls) == 2 and json.loads(path.read_text())["version"] == auto_mod.MODEL_VERSION


def test_a_calibration_on_a_busy_machine_is_not_cached(cache, monkeypatch):
    monkeypatch.setattr(auto_mod, "_LOADED", {})
    monkeypatch.setattr(auto_mod, "calibrate", lambda *a: _model(1e-5))
    monkeypatch.setattr(auto_mod, "machine_is_busy", lambda: True)
    m = auto_mod.cost_model(torch.device("cpu"), torch.float64, 1)
    assert m.lsmr[2] == 1e-5 and not list(cache.glob("cost_model-*.json"))


def test_cheap_lsmr_that_certifies_wins_the_race(cache, monkeypatch, rng):
    monkeypatch.setattr(auto_mod, "cost_model", lambda *a, **k: _model(1e-6))
    p, A = _lin(rng, kappa=3.0)
    res = solve(p, "auto", tol=1e-10)
    info = res.info["auto"]
    assert [r["method"] for r in info["ran"]] == ["lsmr"]
    assert res.method == "auto/lsmr" and res.converged
    assert np.allclose(res.D, p.B @ np.linalg.pinv(A), atol=1e-7)


def test_lsmr_over_its_cap_hands_over_to_the_predicted_best(cache, monkeypatch, rng):
    # the cap allows 25 iterations (3 right-hand sides); an ill-conditioned system needs more
    monkeypatch.setattr(auto_mod, "cost_model",
                        lambda *a, **k: _model(auto_mod.RACE_FRACTION * 1.0 / (25 * 3)))
    p, A = _lin(rng, kappa=1e4)
    res = solve(p, "auto", tol=1e-10)
    info = res.info["auto"]
    assert info["lsmr_iteration_cap"] == 25
    assert [r["method"] for r in info["ran"]] == ["lsmr", "lstsq-gelsy"]
    assert info["ran"][0]["status"] == "max_iterations" and info["ran"][0]["iterations"] == 25
    # a linear system: LAPACK's QR driver, certified by LSQR's tests on the true residual
    assert res.method == "auto/lstsq-gelsy" and res.converged and res.info["check"] <= 1e-10
    assert np.allclose(res.D, p.B @ np.linalg.pinv(A), rtol=1e-6, atol=1e-9)


def test_predicted_best_runs_alone_when_lsmr_cannot_help(cache, monkeypatch, rng):
    # LSMR far too slow to try; EAGLE predicted faster than LAPACK
    monkeypatch.setattr(auto_mod, "cost_model",
                        lambda *a, **k: _model(1.0, direct_s=5.0, eagle_s=1.0))
    p, A = _lin(rng)
    res = solve(p, "auto")
    assert [r["method"] for r in res.info["auto"]["ran"]] == ["eagle"]
    assert res.method == "auto/eagle" and res.converged
    # target_error: LSMR cannot stop on it, so it is never raced
    monkeypatch.setattr(auto_mod, "cost_model", lambda *a, **k: _model(1e-7))
    res = solve(p, "auto", target_error=1e-9)
    assert [r["method"] for r in res.info["auto"]["ran"]] == ["lstsq-gelsy"]
    assert res.error <= 1e-9


def test_qr_that_cannot_certify_hands_over_to_the_svd_driver(cache, monkeypatch, rng):
    monkeypatch.setattr(auto_mod, "cost_model", lambda *a, **k: _model(1.0))     # no race
    p, A = _lin(rng, kappa=1e12)                   # QR's residual tests cannot reach tol here
    res = solve(p, "auto", tol=1e-14)
    ran = [r["method"] for r in res.info["auto"]["ran"]]
    assert ran == ["lstsq-gelsy", "lstsq"] and res.info["auto"]["ran"][0]["status"] == "inexact"
    assert res.method == "auto/lstsq-gelsd" and res.status.value != "converged"   # κ·u > √u


def test_completions_use_the_svd_driver(cache, monkeypatch, rng):
    monkeypatch.setattr(auto_mod, "cost_model", lambda *a, **k: _model(1.0))
    A = rng.standard_normal((20, 30))
    p = Problem.from_arrays(A, rng.standard_normal((2, 20)) @ A, rng.standard_normal((20, 3)))
    res = solve(p, "auto")
    assert [r["method"] for r in res.info["auto"]["ran"]] == ["lstsq"] and res.converged


@pytest.mark.parametrize("kw, name", [(dict(eta=0.2), "eta"), (dict(rcond=1e-6), "rcond"),
                                      (dict(precision="float32"), "precision")])
def test_method_options_are_refused_with_auto(kw, name, rng):
    p, _ = _lin(rng)
    with pytest.raises(ValueError, match=rf"{name}=.*method='auto'.*name the method"):
        solve(p, "auto", **kw)


def test_auto_names_the_regimes_it_does_not_cover(rng):
    p, _ = _lin(rng)
    with pytest.raises(ValueError, match="centralized methods only"):
        solve(p, "auto", workers=2)
    with pytest.raises(ValueError, match="sketch_size=10 does not apply to method=.auto."):
        solve(p, "auto", sketch_size=10)


def test_direct_cost_model_bends_at_the_middle_size():
    """The direct drivers are timed at three sizes: the model goes through all three points (a
    line through the two small ones, then the slope to the large one), and keeps a plain line
    when the large point shows no extra cost."""
    from eagle_dist.solvers.auto import _fit3, _piecewise
    pts = [(1e5, 0.001), (1e8, 0.0151), (6.4e8, 0.0499)]      # cheaper per unit when large
    params = _fit3(pts)
    assert len(params) == 4
    for w, t in pts:
        assert _piecewise(params, w) == pytest.approx(t, rel=1e-9)
    # the large-size slope, not the small-size one, extrapolates: 1e9 costs ~0.073 s, not ~0.141
    assert _piecewise(params, 1e9) == pytest.approx(0.0499 + (0.0499 - 0.0151) / 5.4e8 * 3.6e8)
    assert _fit3([(1e5, 0.001), (1e8, 0.0151), (6.4e8, 0.0100)]) == _fit3(pts)[:2]
