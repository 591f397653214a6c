"""Generators (SPEC §3, §5) and the SuiteSparse protocol (SPEC §5) on the shipped matrices."""
import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse

import eagle_dist.data as data
from eagle_dist.data import (DISTRIBUTIONS, controlled, distribution, load_mtx, load_suitesparse,
                             paper_training, shipped_path)

MANIFEST = Path(data.__file__).resolve().parent / "matrices" / "MANIFEST.csv"


def _manifest_row(key):
    with open(MANIFEST, newline="") as f:
        rows = {f"{r['group']}/{r['name']}": r for r in csv.DictReader(f)}
    return rows[key]


def _arrays(p):
    return [p.A, p.B, p.C] + ([] if p.D_true is None else [p.D_true])


# ---------------------------------------------------------------------------------------------
# seeding

GENERATORS = {
    "controlled": lambda seed: controlled(20, 15, 2, 3, kappa=1e3, seed=seed),
    "controlled-noisy-loguniform": lambda seed: controlled(20, 15, 2, 3, kappa=1e3, noise=0.01,
                                                           spectrum="loguniform", seed=seed),
    "paper_training": lambda seed: paper_training(noise=0.01, seed=seed),
    **{f"distribution-{k}": (lambda k: lambda seed: distribution(k, 20, 15, 2, 3, noise=0.01,
                                                                seed=seed))(k)
       for k in DISTRIBUTIONS},
}


@pytest.mark.parametrize("gen", list(GENERATORS))
def test_generators_are_seeded(gen):
    a, b, c = GENERATORS[gen](7), GENERATORS[gen](7), GENERATORS[gen](8)
    for x, y in zip(_arrays(a), _arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(c)))
    assert a.meta["seed"] == 7


# ---------------------------------------------------------------------------------------------
# controlled(): exact κ and rank, consistent when noiseless

@pytest.mark.parametrize("kappa", [1.0, 1e2, 1e4, 1e6])
@pytest.mark.parametrize("shape", [(30, 30), (40, 25), (25, 40)], ids=["square", "tall", "wide"])
@pytest.mark.parametrize("spectrum", ["geometric", "loguniform"])
def test_controlled_hits_kappa_exactly(kappa, shape, spectrum):
    n, d = shape
    p = controlled(n, d, 2, 2, kappa=kappa, spectrum=spectrum, seed=3)
    s = np.linalg.svd(p.A, compute_uv=False)
    assert s.shape == (min(n, d),)
    assert s[0] == pytest.approx(1.0, rel=1e-12)
    assert s[0] / s[-1] == pytest.approx(kappa, rel=1e-8)
    assert p.condition_number == pytest.approx(kappa, rel=1e-8)
    assert np.linalg.matrix_rank(p.A) == min(n, d)
    # noiseless: rank X = rank A, so the hidden block is exactly the Nyström completion
    assert p.error(p.D_true) < 1e-8 * max(1.0, kappa * 1e-4)
    assert np.linalg.matrix_rank(p.completed(p.D_true), tol=1e-9 / kappa) == min(n, d)


@pytest.mark.parametrize("rank", [1, 5, 17])
def test_controlled_rank(rank):
    p = controlled(30, 24, 3, 2, kappa=1e3, rank=rank, seed=1)
    s = np.linalg.svd(p.A, compute_uv=False)
    assert np.linalg.matrix_rank(p.A) == rank
    assert np.all(s[rank:] < 1e-12)
    if rank > 1:
        assert s[0] / s[rank - 1] == pytest.approx(1e3, rel=1e-8)
    assert p.error(p.D_true) < 1e-10
    assert p.meta["rank"] == rank


def test_controlled_noise_and_dtype():
    clean = controlled(30, 30, 2, 2, kappa=10, seed=4)
    noisy = controlled(30, 30, 2, 2, kappa=10, noise=0.1, seed=4)
    # the noise is i.i.d. N(0, 0.1²) on every block: its empirical std is close to 0.1
    diff = np.concatenate([(noisy.A - clean.A).ravel(), (noisy.C - clean.C).ravel()])
    assert 0.09 < diff.std() < 0.11
    assert noisy.error(noisy.D_true) > 1e-3                  # inconsistent now
    p32 = controlled(10, 10, kappa=10, seed=0, dtype=np.float32)
    assert all(x.dtype == np.float32 for x in _arrays(p32))


def test_controlled_shapes():
    p = controlled(11, 7, 3, 5, kappa=10, seed=0)
    assert (p.n, p.d, p.n_query, p.d_query) == (11, 7, 3, 5)
    assert p.B.shape == (3, 7) and p.C.shape == (11, 5) and p.D_true.shape == (3, 5)


# ---------------------------------------------------------------------------------------------
# the six evaluation distributions and the paper's training distribution

@pytest.mark.parametrize("kind", DISTRIBUTIONS)
def test_each_distribution_builds(kind):
    p = distribution(kind, 30, 20, 2, 3, rank=8, seed=2)
    assert (p.n, p.d, p.n_query, p.d_query) == (30, 20, 2, 3)
    assert all(np.isfinite(x).all() for x in _arrays(p))
    X = p.completed(p.D_true)
    assert np.linalg.matrix_rank(X) == 8 == np.linalg.matrix_rank(p.A)
    # rank X = rank A: consistent, so D_true is the Nyström completion
    assert p.error(p.D_true) < 1e-8
    assert p.meta["generator"] == kind
    # default rank = min(n, d): A full rank (sparse Rademacher factors need n ≳ 60 for that)
    full = distribution(kind, 60, 60, seed=0)
    assert np.linalg.matrix_rank(full.A) == 60


def test_distribution_specific_structure():
    sv = np.linalg.svd(distribution("svd", 40, 40, rank=40, seed=0).completed(
        distribution("svd", 40, 40, rank=40, seed=0).D_true), compute_uv=False)
    assert sv[0] <= 1.0 + 1e-12 and sv[39] >= 1e-2 * (1 - 1e-12)   # log-uniform in [1e-2, 1]
    noisy = distribution("gaussian", 20, 20, rank=5, noise=0.01, seed=0)
    assert np.linalg.matrix_rank(noisy.A) == 20                  # noise fills the spectrum


def test_paper_training_distribution():
    p = paper_training(seed=0)
    assert (p.n, p.d, p.n_query, p.d_query) == (18, 18, 2, 2)
    assert np.linalg.matrix_rank(p.completed(p.D_true)) == 10 == np.linalg.matrix_rank(p.A)
    assert p.error(p.D_true) < 1e-8


# ---------------------------------------------------------------------------------------------
# SuiteSparse protocol on the shipped HB/dwt_1007

@pytest.fixture(scope="module")
def dwt():
    return load_suitesparse("HB/dwt_1007")


def test_dwt_1007_shape_nnz_rank(dwt):
    row = _manifest_row("HB/dwt_1007")
    # independent read of the shipped file
    with gzip.open(shipped_path("HB/dwt_1007"), "rb") as f:
        M = scipy.io.mmread(f)
    assert M.shape == (1007, 1007) == (int(row["rows"]), int(row["cols"]))
    assert M.nnz == int(row["nnz"]) == 8575
    assert tuple(dwt.meta["shape"]) == (1007, 1007)
    assert dwt.meta["nnz"] == int(row["nnz"])
    assert dwt.meta["rank"] == int(row["rank"]) == 1000
    assert load_mtx("HB/dwt_1007").nnz == 8575


def test_dwt_1007_full_rank_block(dwt):
    assert dwt.A.shape == (1000, 1000) and dwt.B.shape == (1, 1000)
    assert dwt.C.shape == (1000, 7) and dwt.D_true.shape == (1, 7)
    assert np.linalg.matrix_rank(dwt.A) == 1000
    assert np.any(dwt.B)                                    # B is a nonzero row
    # the blocks are exactly the protocol's rows/columns of the file
    dense = load_mtx("HB/dwt_1007").toarray()
    rows, cols, b = dwt.meta["rows"], dwt.meta["cols"], dwt.meta["b_row"]
    assert len(set(rows)) == len(set(cols)) == 1000 and b not in set(rows)
    np.testing.assert_array_equal(dwt.A, dense[np.ix_(rows, cols)])
    np.testing.assert_array_equal(dwt.B, dense[[b]][:, cols])
    rest = np.setdiff1d(np.arange(1007), cols)
    np.testing.assert_array_equal(dwt.C, dense[np.ix_(rows, rest)])
    np.testing.assert_array_equal(dwt.D_true, dense[[b]][:, rest])


def test_dwt_1007_d_true_is_the_reference(dwt):
    # rank M = 1000 = rank A, so D_true = B A⁻¹ C. (For this matrix B's row is zero on the 7
    # leftover columns, so D̂ = 0 and the error is measured against the data scale.)
    ref = dwt.B @ np.linalg.solve(dwt.A, dwt.C)             # A is invertible
    assert dwt.error(dwt.D_true) <= 1e-8                     # vs problem.reference (pinv)
    scale = np.linalg.norm(dwt.B) * np.linalg.norm(dwt.C) / np.linalg.norm(dwt.A, 2)
    assert np.linalg.norm(dwt.D_true - ref) <= 1e-8 * max(np.linalg.norm(ref), scale)


@pytest.mark.slow          # 15-20 s: loads two shipped matrices through the protocol again
def test_zero_hidden_block_is_flagged(caplog):
    # D̂ = 0 makes the completion a weak test; the loader says so and names the alternative
    with caplog.at_level("WARNING", logger="eagle_dist"):
        load_suitesparse("HB/dwt_1007")
    msgs = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("hidden block D is zero" in m and "identity" in m for m in msgs), msgs
    caplog.clear()
    with caplog.at_level("WARNING", logger="eagle_dist"):
        load_suitesparse("HB/abb313")                       # D̂ ≠ 0: nothing to flag
    assert not [r for r in caplog.records if "hidden block" in r.getMessage()]


def test_dwt_1007_identity_c_block():
    p = load_suitesparse("HB/dwt_1007", rank=1000, c_block="identity")
    np.testing.assert_array_equal(p.C, np.eye(1000))
    assert p.D_true is None and p.meta["c_block"] == "identity"
    assert p.A.shape == (1000, 1000) and p.B.shape == (1, 1000)


def test_suitesparse_protocol_nontrivial_completion():
    # HB/abb313: rank 128 < 176 columns, so C has 48 columns and D̂ ≠ 0
    p = load_suitesparse("HB/abb313")
    row = _manifest_row("HB/abb313")
    assert p.meta["rank"] == int(row["rank"]) == 128
    assert p.A.shape == (128, 128) and p.C.shape == (128, 48)
    assert np.linalg.matrix_rank(p.A) == 128
    ref = p.B @ np.linalg.pinv(p.A) @ p.C
    assert np.linalg.norm(ref) > 0.1
    assert np.linalg.norm(p.D_true - ref) <= 1e-8 * np.linalg.norm(ref)


def test_load_suitesparse_from_path_and_small_file(tmp_path):
    # a rank-2 3x3 matrix: row 3 = row 1 + row 2
    X = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [2.0, 2.0, 3.0]])
    path = tmp_path / "small.mtx"
    scipy.io.mmwrite(str(path), scipy.sparse.coo_matrix(X))
    p = load_suitesparse(path)
    assert p.meta["rank"] == 2 and p.A.shape == (2, 2) and p.C.shape == (2, 1)
    assert p.error(p.D_true) < 1e-12
    gz = tmp_path / "small.mtx.gz"
    with gzip.open(gz, "wb") as f:
        f.write(path.read_bytes())
    np.testing.assert_array_equal(load_mtx(gz).toarray(), X)


def test_shipped_names_resolve():
    assert shipped_path("dwt_1007") == shipped_path("HB/dwt_1007")
    assert shipped_path("HB/dwt_1007").exists()
    assert "HB/dwt_1007" in data.SHIPPED
