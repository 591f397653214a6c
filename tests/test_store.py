"""Column-partitioned stores: each distributed worker reads only its own columns (issue 9)."""
import json

import numpy as np
import pytest

from eagle_dist import Problem, solve
from eagle_dist.data import store as st
from eagle_dist.data.store import ColumnStore, ShardRef, lstsq_layout, write_store


@pytest.fixture(scope="module")
def consistent(tmp_path_factory):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((20, 150)) * np.logspace(0, -3, 20)[:, None]
    W = rng.standard_normal((2, 20))
    path = tmp_path_factory.mktemp("store") / "s"
    return A, W, write_store(path, A, W @ A, None, W, part_columns=17)


def test_columns_read_back_exactly_from_any_range_or_index_set(consistent):
    A, W, s = consistent
    B = W @ A
    assert (s.n, s.d, s.n_query, s.d_query, len(s.parts)) == (20, 150, 2, 20, 9)
    for cols in [(0, 150), (16, 18), (40, 41), (33, 140)]:
        a, b = s.columns(cols)
        assert a.flags.c_contiguous and a.shape == (20, cols[1] - cols[0])
        np.testing.assert_array_equal(a, A[:, cols[0]:cols[1]])
        np.testing.assert_array_equal(b, B[:, cols[0]:cols[1]])
    idx = np.array([149, 0, 17, 18, 77])
    a, b = s.columns(idx)
    np.testing.assert_array_equal(a, A[:, idx])
    ref = ShardRef(str(s.path), (10, 60), scale_A=4.0, scale_B=0.5)
    a, b = ref.load()
    np.testing.assert_array_equal(a, A[:, 10:60] / 4.0)
    np.testing.assert_array_equal(b, B[:, 10:60] / 0.5)
    # the manifest alone gives the scale: the largest |entry| and Frobenius norms of A and B
    assert s.max_abs_A == np.abs(A).max()
    np.testing.assert_allclose(s.fro_A, np.linalg.norm(A), rtol=1e-12)
    with pytest.raises(ValueError, match="outside"):
        s.columns((140, 151))


def test_streamed_blocks_give_the_same_store(tmp_path):
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((6, 50)), rng.standard_normal((1, 50))
    s = write_store(tmp_path / "s", blocks=((A[:, i:i + 7], B[:, i:i + 7]) for i in range(0, 50, 7)),
                    n=6, n_query=1)
    np.testing.assert_array_equal(s.columns((0, 50))[0], A)
    np.testing.assert_array_equal(s.load_C(), np.eye(6))
    assert not s.has_d_true


def test_bad_stores_and_inputs_are_refused_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="eagle-dist shard"):
        ColumnStore.open(tmp_path)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 10))
    write_store(tmp_path / "s", A, A[:1])
    with pytest.raises(FileExistsError, match="overwrite"):
        write_store(tmp_path / "s", A, A[:1])
    write_store(tmp_path / "s", A, A[:1], overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        write_store(tmp_path / "other", A, A[:1], overwrite=True)
    bad = A.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_store(tmp_path / "nan", bad, A[:1])
    with pytest.raises(ValueError, match="all zeros"):
        write_store(tmp_path / "zero", np.zeros((3, 4)), np.ones((1, 4)))
    man = json.loads((tmp_path / "s" / "manifest.json").read_text())
    man["parts"][0]["stop"] += 1
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="parts"):
        ColumnStore.open(tmp_path / "s")


def test_lstsq_layout_answer_is_the_minimum_norm_solution_even_when_rank_deficient():
    rng = np.random.default_rng(1)
    M = rng.standard_normal((60, 5)) @ rng.standard_normal((5, 12))      # 60 samples, rank 5
    A, B, w = lstsq_layout(M, seed=2)
    assert A.shape == (12, 60) and B.shape == (1, 60)
    np.testing.assert_allclose(B @ np.linalg.pinv(A), w, atol=1e-12)
    _, _, none = lstsq_layout(M, seed=2, noise=0.1)
    assert none is None


@pytest.mark.parametrize("mode", ["gram", "paper"])
def test_store_solve_matches_the_in_memory_solve(consistent, mode):
    A, W, s = consistent
    prob = Problem.from_arrays(A, W @ A, None, W)
    mem = solve(prob, "eagle", workers=3, mode=mode, tol=1e-12)
    res = solve(s, "eagle", workers=3, mode=mode, tol=1e-12, record_error=True)
    assert res.converged and mem.converged
    assert res.rounds == mem.rounds and res.info["loaded_by_worker"]
    np.testing.assert_allclose(res.D, mem.D, rtol=0, atol=1e-12 * np.abs(mem.D).max())
    ref = prob.B @ np.linalg.pinv(prob.A)
    assert np.linalg.norm(res.D - ref) <= 1e-10 * np.linalg.norm(ref)   # independent reference
    assert res.error < 1e-10                                              # vs the store's D_true


def test_store_without_answer_needs_no_reference_and_says_why_when_asked(tmp_path):
    rng = np.random.default_rng(5)
    A = rng.standard_normal((8, 40))
    s = write_store(tmp_path / "s", A, rng.standard_normal((1, 8)) @ A)
    with pytest.raises(ValueError, match="no D_true"):
        solve(s, "eagle", workers=2, record_error=True)       # asked for errors: says why not
    res = solve(s, "eagle", workers=2)                        # the default needs no reference
    assert res.converged and np.isnan(res.error)
    ref = s.to_problem().reference
    assert np.linalg.norm(res.D - ref) <= 1e-10 * np.linalg.norm(ref)
    with pytest.raises(ValueError, match="column store"):
        solve(s, "lsmr")


def test_two_ray_actors_solve_a_store_without_the_driver_reading_a(consistent, monkeypatch,
                                                                     ray_cluster):
    """Two actors, one on each node of the session's two-node cluster, each read their own
    columns of the store (one shared file system); the driver reads none."""
    A, W, s = consistent

    def driver_must_not_read(*args, **kwargs):
        raise AssertionError("the driver read columns of A")
    monkeypatch.setattr(ColumnStore, "columns", driver_must_not_read)
    before = dict(st.READ_BYTES)
    res = solve(s, "eagle", workers=2, backend="ray", mode="gram", tol=1e-12, timeout=30,
                record_error=True)
    assert res.converged and res.info["loaded_by_worker"] and res.backend.startswith("ray")
    assert res.info["nodes"] == 2                  # the two ranks ran on different nodes
    assert st.READ_BYTES == before                 # nothing of A or B read in this process
    assert res.error < 1e-10
    assert res.info["shard_bytes_max"] == 8 * (20 + 2) * 75
    assert res.info["worker_peak_rss_bytes"] > 0


def test_cli_shards_a_matrix_market_file_and_solves_the_store(tmp_path, capsys):
    """`eagle-dist shard` then `eagle-dist solve --store`, through the CLI's entry point (in this
    process: a subprocess per command only re-imports torch; tests/test_cli.py runs the console
    script itself)."""
    from eagle_dist.cli import main

    def cli(*argv):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    out = tmp_path / "abb"
    code, _, err = cli("shard", "HB/abb313", "--out", str(out), "--part-columns", "50")
    assert code == 0, err
    s = ColumnStore.open(out)
    assert (s.n, s.d, len(s.parts)) == (176, 313, 7) and s.has_d_true   # A = Mᵀ: samples sharded
    code, stdout, err = cli("solve", "--store", str(out), "--workers", "3", "--methods", "eagle,cg",
                            "--max-iter", "3000", "--record-error")
    assert code == 0, err
    eagle_row = next(ln for ln in stdout.splitlines() if ln.startswith("| eagle"))
    cells = [c.strip() for c in eagle_row.split("|")]
    assert "converged" in cells and "gram" in cells
    assert float(cells[8]) < 1e-9                  # error against the store's D_true
    code, _, err = cli("shard", "HB/abb313", "--out", str(out))
    assert code == 2 and "overwrite" in err


@pytest.mark.slow
def test_scale_bench_driver_memory_is_flat_in_d_with_eight_ray_workers(tmp_path):
    """`eagle-dist bench scale` at a reduced size (the full run is in benchmarks/results/scale):
    8 Ray workers, each solve in a fresh driver; the driver's peak does not grow with d while the
    dense A quadruples, and every solve converges to the known answer."""
    pytest.importorskip("ray", reason="Ray is an install extra ('eagle-dist[ray]')")
    from eagle_dist.cli import main
    out = tmp_path / "scale"
    assert main(["bench", "scale", "--n", "32", "--d", "250000,1000000", "--backends", "ray",
                 "--out", str(out), "--store-dir", str(tmp_path / "stores")]) == 0
    rows = json.loads((out / "scale.json").read_text())
    assert [r["status"] for r in rows] == ["converged", "converged"]
    assert all(r["error"] < 1e-12 and r["rounds"] < 40 for r in rows)
    small, big = rows
    grown = big["dense_A_GiB"] - small["dense_A_GiB"]                       # 0.18 GiB more of A
    assert big["driver_peak_rss_bytes"] - small["driver_peak_rss_bytes"] < 0.25 * grown * 2 ** 30
    assert big["shard_bytes_max"] == pytest.approx(4 * small["shard_bytes_max"], rel=1e-3)


def test_bench_sharded_writes_its_table(tmp_path):
    """A small `eagle-dist bench sharded` (in-process, one tall matrix, low caps): every method is
    a row, the Gram mode converges in the centralized iteration count (±1)."""
    from eagle_dist.bench.report import read_csv
    from eagle_dist.cli import main
    out = tmp_path / "sh"
    assert main(["bench", "sharded", "--orientations", "lstsq", "--matrices", "HB/abb313",
                 "--backend", "inprocess", "--paper-rounds", "20", "--gd-rounds", "20",
                 "--out", str(out)]) == 0
    rows = read_csv(str(out / "sharded.csv"))
    assert [r["method"] for r in rows] == ["eagle-gram", "eagle-paper", "cg", "gd"]
    gram = rows[0]
    assert gram["status"] == "converged" and float(gram["error"]) < 1e-10
    assert abs(int(gram["rounds"]) - int(gram["central_iterations"])) <= 1
    assert rows[1]["status"] == "max_iterations" and int(rows[1]["rounds"]) == 20
    assert 0 < float(gram["alpha"]) < 1
    assert "eagle-gram" in (out / "summary.md").read_text()
