"""Bad input is rejected at the boundary with one ValueError/TypeError that names the argument
and the fix."""
import gzip

import numpy as np
import pytest
import torch

from eagle_dist import Problem, solve, solve_least_squares
from eagle_dist.data import controlled, distribution, load_mtx, load_suitesparse, paper_training

RNG = np.random.default_rng(0)
A = RNG.standard_normal((6, 5))
B = RNG.standard_normal((2, 5))
C = RNG.standard_normal((6, 3))


def _with_bad(x, value):
    y = x.copy()
    y[1, 2] = value
    return y


# ---------------------------------------------------------------------------------------------
# Problem.from_arrays

FROM_ARRAYS = [
    # (id, args, kwargs, exception, message regex naming the argument)
    ("A-1d", (A[0], B, C), {}, ValueError, r"^A must be 2-D"),
    ("A-3d", (A[None], B, C), {}, ValueError, r"^A must be 2-D"),
    ("B-1d", (A, B[0], C), {}, ValueError, r"^B must be 2-D"),
    ("C-1d", (A, B, C[:, 0]), {}, ValueError, r"^C must be 2-D"),
    ("A-scalar", (np.float64(3.0), B, C), {}, ValueError, r"^A must be 2-D"),
    ("B-cols", (A, B[:, :4], C), {}, ValueError, r"^B has 4 columns but A has 5"),
    ("C-rows", (A, B, C[:5]), {}, ValueError, r"^C has 5 rows but A has 6"),
    ("D_true-shape", (A, B, C), {"D_true": np.zeros((2, 2))}, ValueError, r"^D_true has shape"),
    ("A-empty", (np.zeros((0, 5)), B, C), {}, ValueError, r"^A is empty"),
    ("B-empty", (A, np.zeros((0, 5)), C), {}, ValueError, r"^B is empty"),
    ("C-empty", (A, B, np.zeros((6, 0))), {}, ValueError, r"^C is empty"),
    ("A-nan", (_with_bad(A, np.nan), B, C), {}, ValueError, r"^A contains 1 NaN/Inf"),
    ("A-inf", (_with_bad(A, np.inf), B, C), {}, ValueError, r"^A contains 1 NaN/Inf"),
    ("B-nan", (A, _with_bad(B, np.nan), C), {}, ValueError, r"^B contains 1 NaN/Inf"),
    ("C-inf", (A, B, _with_bad(C, -np.inf)), {}, ValueError, r"^C contains 1 NaN/Inf"),
    ("D_true-nan", (A, B, C), {"D_true": np.full((2, 3), np.nan)}, ValueError,
     r"^D_true contains 6 NaN/Inf"),
    ("A-complex", (A + 1j, B, C), {}, TypeError, r"^A is complex"),
    ("C-complex", (A, B, C.astype(np.complex64)), {}, TypeError, r"^C is complex"),
    ("A-torch-complex", (torch.tensor(A + 1j), B, C), {}, TypeError, r"^A is complex"),
    ("B-object", (A, np.array([[1, "x", 2, 3, 4], [1, 2, 3, 4, 5]], dtype=object), C), {},
     TypeError, r"^B has dtype object"),
    ("A-strings", (np.array([["a", "b"], ["c", "d"]]), B, C), {}, TypeError,
     r"^A has unsupported dtype"),
    ("A-zero", (np.zeros((6, 5)), B, C), {}, ValueError, r"^A is all zeros"),
    ("B-ragged", (A, [[1.0, 2.0], [3.0]], C), {}, TypeError, r"^B: cannot convert"),
]


@pytest.mark.parametrize("args,kwargs,exc,msg", [pytest.param(*c[1:], id=c[0]) for c in FROM_ARRAYS])
def test_from_arrays_rejects(args, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        Problem.from_arrays(*args, **kwargs)


# ---------------------------------------------------------------------------------------------
# solve options

@pytest.fixture(scope="module")
def prob():
    return controlled(8, 8, 2, 2, kappa=10, seed=0)


SOLVE = [
    ("tol-0", dict(tol=0.0), ValueError, r"^tol=0\.0 must be a positive"),
    ("tol-neg", dict(tol=-1e-8), ValueError, r"^tol=-1e-08 must be a positive"),
    ("tol-nan", dict(tol=float("nan")), ValueError, r"^tol=nan"),
    ("tol-inf", dict(tol=float("inf")), ValueError, r"^tol=inf"),
    ("tol-str", dict(tol="1e-8"), ValueError, r"^tol='1e-8'"),
    ("max_iter-0", dict(max_iter=0), ValueError, r"^max_iter=0 must be a positive integer"),
    ("max_iter-neg", dict(max_iter=-5), ValueError, r"^max_iter=-5"),
    ("max_iter-float", dict(max_iter=2.5), ValueError, r"^max_iter=2\.5"),
    ("target_error-0", dict(target_error=0.0), ValueError, r"^target_error=0\.0"),
    ("time_budget-neg", dict(time_budget=-1.0), ValueError, r"^time_budget=-1\.0"),
    ("patience-0", dict(patience=0), ValueError, r"^patience=0"),
    ("callback", dict(callback=42), TypeError, r"^callback must be callable"),
    ("method", dict(method="newton"), ValueError, r"^method='newton' is unknown"),
    ("backend", dict(backend="mpi"), ValueError, r"^backend='mpi'"),
    ("workers-0", dict(workers=0), ValueError, r"^workers=0"),
    ("dtype", dict(dtype="float16"), TypeError, r"^dtype='float16'"),
    ("device", dict(device="tpu"), ValueError, r"^device='tpu'"),
    ("sketch_size-0", dict(sketch_size=0), ValueError, r"^sketch_size=0 must be an integer in 1\.\.d = 1\.\.8"),
    ("sketch_size-gt-d", dict(sketch_size=9), ValueError, r"^sketch_size=9 must be an integer in 1\.\.d"),
    ("sketch_size-neg", dict(sketch_size=-2), ValueError, r"^sketch_size=-2"),
    ("sketch_size-float", dict(sketch_size=2.5), ValueError, r"^sketch_size=2\.5"),
    ("sketch_kind", dict(sketch_size=4, sketch_kind="gaussian"), ValueError, r"^sketch_kind='gaussian'"),
    ("sgd-no-sketch", dict(method="sgd"), ValueError, r"^method='sgd' needs sketch_size"),
    ("sgd-sketch-0", dict(method="sgd", sketch_size=0), ValueError, r"^sketch_size=0"),
    ("sketch-on-cg", dict(method="cg", sketch_size=4), ValueError, r"^sketch_size=4 does not apply to method='cg'"),
    ("eta-neg", dict(eta=-0.1), ValueError, r"^eta=-0\.1 must lie in \[0, 1\)"),
    ("eta-1", dict(eta=1.0), ValueError, r"^eta=1\.0 must lie in \[0, 1\)"),
    ("gamma-0", dict(gamma=0.0), ValueError, r"^gamma=0\.0 must lie in \(0, 2\)"),
    ("gamma-2", dict(gamma=2.0), ValueError, r"^gamma=2\.0 must lie in \(0, 2\)"),
    ("gamma-gd", dict(method="gd", gamma=2.5), ValueError, r"^gamma=2\.5"),
    ("eta-on-cg", dict(method="cg", eta=0.5), ValueError, r"^eta=0.5 does not apply to method='cg'"),
    ("gamma-on-pinv", dict(method="pinv", gamma=0.5), ValueError, r"^gamma=0.5 does not apply to method='pinv'"),
    ("norm", dict(norm="frobenius"), ValueError, r"^norm='frobenius'"),
    ("norm-stable-eta", dict(norm="stable", eta=0.5), ValueError, r"^norm='stable' needs eta <= 1/3"),
    ("norm-stable-sketch", dict(norm="stable", sketch_size=4), ValueError, r"^norm='stable' needs"),
    ("workers-with-lsmr", dict(method="lsmr", workers=2), ValueError,
     r"^method='lsmr' has no distributed"),
]


@pytest.mark.parametrize("kwargs,exc,msg", [pytest.param(*c[1:], id=c[0]) for c in SOLVE])
def test_solve_rejects(prob, kwargs, exc, msg):
    kwargs = dict(kwargs)
    method = kwargs.pop("method", "eagle")
    with pytest.raises(exc, match=msg):
        solve(prob, method, **kwargs)


@pytest.mark.parametrize("not_a_problem", [A, (A, B, C), None])
def test_solve_rejects_non_problem(not_a_problem):
    with pytest.raises(TypeError, match=r"^problem must be an eagle_dist\.Problem"):
        solve(not_a_problem)


def test_validation_happens_before_any_work(prob, monkeypatch):
    # a rejected call never reaches a solver (nothing half-runs)
    import eagle_dist.api as api
    called = []
    monkeypatch.setitem(api.METHODS, "eagle", lambda *a, **k: called.append(1))
    with pytest.raises(ValueError):
        solve(prob, "eagle", tol=-1.0)
    assert not called


def test_validated_options_are_reused_only_for_the_same_keywords():
    """Repeated keyword calls reuse the checked options (many small solves in a loop); a bad
    value is rejected every time, and 1, 1.0 and True are different keywords."""
    from eagle_dist.options import validated_options
    a = validated_options({"tol": 1e-8, "max_iter": 50}, "eagle")
    assert validated_options({"max_iter": 50, "tol": 1e-8}, "eagle") is a
    assert a.tol == 1e-8 and a.max_iter == 50
    assert validated_options({"tol": 1e-8, "max_iter": 50}, "cg") is not a
    for _ in range(2):
        with pytest.raises(ValueError, match=r"^tol=-1\.0"):
            validated_options({"tol": -1.0}, "eagle")
        with pytest.raises(ValueError, match=r"^max_iter=True"):
            validated_options({"max_iter": True}, "eagle")
    assert validated_options({"patience": 1}, "eagle").patience == 1
    with pytest.raises(ValueError, match=r"^patience=1\.0"):      # not the cached patience=1
        validated_options({"patience": 1.0}, "eagle")


# ---------------------------------------------------------------------------------------------
# solve_least_squares(A, b)

@pytest.mark.parametrize("Ab,exc,msg", [
    pytest.param((A, np.ones(5)), ValueError, r"^b has 5 rows but A has 6", id="b-rows"),
    pytest.param((A, _with_bad(np.ones((6, 3)), np.nan)), ValueError, r"^b contains 1 NaN/Inf",
                 id="b-nan"),
    pytest.param((A[0], np.ones(5)), ValueError, r"^A must be 2-D", id="A-1d"),
    pytest.param((A + 0j, np.ones(6)), TypeError, r"^A is complex", id="A-complex"),
    pytest.param((A, np.ones((6, 2, 2))), ValueError, r"^b must be 2-D", id="b-3d"),
])
def test_lstsq_rejects(Ab, exc, msg):
    with pytest.raises(exc, match=msg):
        solve_least_squares(*Ab)


# ---------------------------------------------------------------------------------------------
# Matrix Market files

MTX_BODIES = {
    "no-banner": ("plain.mtx", "hello, this is not a matrix\n1 2 3\n",
                  r"missing '%%MatrixMarket' banner"),
    "empty-file": ("empty.mtx", "", r"missing '%%MatrixMarket' banner"),
    "complex": ("cplx.mtx", "%%MatrixMarket matrix coordinate complex general\n2 2 1\n1 1 1.0 2.0\n",
                r"complex Matrix Market files are not supported"),
    "bad-entry": ("bad.mtx", "%%MatrixMarket matrix coordinate real general\n3 3 2\n1 1 1.0\n2 x 5\n",
                  r"malformed Matrix Market content"),
    "bad-size-line": ("dims.mtx", "%%MatrixMarket matrix coordinate real general\nfoo bar\n",
                      r"malformed Matrix Market content"),
    "truncated": ("trunc.mtx", "%%MatrixMarket matrix coordinate real general\n3 3 5\n1 1 1.0\n",
                  r"malformed Matrix Market content"),
    "index-out-of-range": ("oor.mtx", "%%MatrixMarket matrix coordinate real general\n2 2 1\n5 5 1.0\n",
                           r"malformed Matrix Market content"),
    "zero-size": ("zero.mtx", "%%MatrixMarket matrix coordinate real general\n0 0 0\n",
                  r"empty matrix of shape \(0, 0\)"),
    "nan-entry": ("nan.mtx", "%%MatrixMarket matrix coordinate real general\n3 3 3\n1 1 nan\n2 2 1\n3 3 1\n",
                  r"1 NaN/Inf entries"),
    "inf-entry": ("inf.mtx", "%%MatrixMarket matrix coordinate real general\n3 3 3\n1 1 inf\n2 2 1\n3 3 1\n",
                  r"1 NaN/Inf entries"),
}


@pytest.mark.parametrize("loader", [load_mtx, load_suitesparse], ids=["load_mtx", "load_suitesparse"])
@pytest.mark.parametrize("case", list(MTX_BODIES))
def test_unreadable_mtx(tmp_path, loader, case):
    fname, body, msg = MTX_BODIES[case]
    path = tmp_path / fname
    path.write_text(body)
    with pytest.raises(ValueError, match=msg) as ei:
        loader(path)
    assert str(path) in str(ei.value)                       # the message names the file


@pytest.mark.parametrize("loader", [load_mtx, load_suitesparse], ids=["load_mtx", "load_suitesparse"])
def test_corrupt_gzip_and_gzipped_garbage(tmp_path, loader):
    bad = tmp_path / "bad.mtx.gz"
    bad.write_bytes(b"definitely not gzip")
    with pytest.raises(ValueError, match=r"cannot read") as ei:
        loader(bad)
    assert str(bad) in str(ei.value)
    garbage = tmp_path / "garbage.mtx.gz"
    with gzip.open(garbage, "wt") as f:
        f.write("no banner here\n")
    with pytest.raises(ValueError, match=r"missing '%%MatrixMarket' banner"):
        loader(garbage)


@pytest.mark.parametrize("source,msg", [
    ("/nonexistent/dir/matrix.mtx", r"'/nonexistent/dir/matrix\.mtx' does not exist"),
    ("/nonexistent/dir/matrix.mtx.gz", r"does not exist"),
    ("HB/not_a_matrix", r"matrix 'HB/not_a_matrix' is not shipped"),
    ("not_a_matrix", r"matrix 'not_a_matrix' is not shipped"),
])
def test_missing_mtx(source, msg):
    with pytest.raises(ValueError, match=msg):
        load_mtx(source)


def test_nonexistent_path_object(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_suitesparse(tmp_path / "nope.mtx")


def test_load_suitesparse_bad_arguments(tmp_path):
    path = tmp_path / "ok.mtx"
    path.write_text("%%MatrixMarket matrix coordinate real general\n3 3 4\n1 1 2\n2 2 1\n3 3 1\n3 1 1\n")
    with pytest.raises(ValueError, match=r"^c_block='diag'"):
        load_suitesparse(path, c_block="diag")
    # a full-rank 3 x 3 matrix has no row left for B
    with pytest.raises(ValueError, match=r"^rank=3 must be in 1\.\.rows-1"):
        load_suitesparse(path)
    with pytest.raises(ValueError, match=r"^rank=0"):
        load_suitesparse(path, rank=0)


# ---------------------------------------------------------------------------------------------
# generators

@pytest.mark.parametrize("call,msg", [
    pytest.param(lambda: controlled(0, 5), r"^n=0 must be a positive integer", id="n-0"),
    pytest.param(lambda: controlled(5, 5, 0, 1), r"^n_query=0", id="n_query-0"),
    pytest.param(lambda: controlled(5, 5, d_query=1.5), r"^d_query=1\.5", id="d_query-float"),
    pytest.param(lambda: controlled(5, 5, kappa=0.5), r"^kappa=0\.5 must be a finite number >= 1",
                 id="kappa-lt-1"),
    pytest.param(lambda: controlled(5, 5, kappa=float("inf")), r"^kappa=inf", id="kappa-inf"),
    pytest.param(lambda: controlled(5, 5, rank=0), r"^rank=0 must be an integer in 1\.\.min",
                 id="rank-0"),
    pytest.param(lambda: controlled(5, 4, rank=5), r"^rank=5", id="rank-gt-min"),
    pytest.param(lambda: controlled(5, 5, noise=-1.0), r"^noise=-1\.0 must be a finite number >= 0", id="noise"),
    pytest.param(lambda: controlled(5, 5, spectrum="flat"), r"^spectrum='flat'", id="spectrum"),
    pytest.param(lambda: distribution("cauchy", 5, 5), r"^distribution 'cauchy' is unknown",
                 id="distribution"),
    pytest.param(lambda: distribution("gaussian", 5, 5, rank=9), r"^rank=9", id="dist-rank"),
    pytest.param(lambda: paper_training(s=0), r"^s=0", id="paper-s"),
])
def test_generators_reject(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()
