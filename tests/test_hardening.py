"""Bad configs, paths and sizes end in one clear error (exit 2), never a traceback or a hang."""
from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.sparse as sp

from eagle_dist import Problem
from eagle_dist.cli import main
from eagle_dist.config import load_config, resolve_config
from eagle_dist.data import load_mtx
from eagle_dist.distributed import make_shards


def _exit(capsys, argv):
    with pytest.raises(SystemExit) as ei:
        main(argv)
    return ei.value.code, capsys.readouterr().err


def test_inherit_cycle_is_named(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("inherit: b.yaml\nsolve: {workers: 2}\n")
    (tmp_path / "b.yaml").write_text("inherit: a.yaml\n")
    code, err = _exit(capsys, ["run", "--config", str(tmp_path / "a.yaml")])
    assert code == 2 and "cycle" in err and "a.yaml" in err and "Traceback" not in err


def test_missing_inherit_parent(tmp_path):
    (tmp_path / "a.yaml").write_text("inherit: nowhere.yaml\n")
    with pytest.raises(ValueError, match="nowhere.yaml.*does not exist"):
        load_config(str(tmp_path / "a.yaml"))


def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="billion laughs"):
        load_config(str(tmp_path / "bomb.yaml"))
    assert time.perf_counter() - t0 < 5          # refused before expanding 9^9 nodes


def test_deeply_nested_yaml(tmp_path):
    (tmp_path / "deep.yaml").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="nested"):
        load_config(str(tmp_path / "deep.yaml"))


def test_directory_as_config(tmp_path, capsys):
    code, err = _exit(capsys, ["run", "--config", str(tmp_path)])
    assert code == 2 and "is a directory" in err


def test_shipped_config_by_name():
    assert resolve_config("distributed").endswith("distributed.yaml")
    assert load_config("distributed_gd").solve.method == "gd"
    with pytest.raises(ValueError, match="shipped config name"):
        resolve_config("no_such_config")


@pytest.mark.parametrize("body,key", [("solve: {workers: -1}", "solve.workers"),
                                      ("solve: {timeout: .inf}", "solve.timeout"),
                                      ("solve: {mode: fast}", "solve.mode"),
                                      ("solve: {device: meta}", "solve.device"),
                                      ("problem: {n: 0}", "problem.n")])
def test_bad_config_values_are_refused_before_running(tmp_path, body, key):
    (tmp_path / "c.yaml").write_text(body + "\n")
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(str(tmp_path / "c.yaml"))


def test_out_that_is_a_file_is_refused_before_solving(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    code, err = _exit(capsys, ["solve", "--n", "8", "--d", "8", "--out", str(f)])
    assert code == 2 and "existing file" in err


def test_runs_never_overwrite_each_other_silently(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["solve", "--n", "8", "--d", "8", "--out", out]) == 0
    code, err = _exit(capsys, ["solve", "--n", "8", "--d", "8", "--out", out])
    assert code == 2 and "--overwrite" in err
    assert main(["solve", "--n", "8", "--d", "8", "--out", out, "--overwrite"]) == 0


def test_huge_mtx_header_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.mtx"
    path.write_text("%%MatrixMarket matrix coordinate real general\n%c\n2000000 2000000 1\n1 1 1.0\n")
    with pytest.raises(ValueError, match="GiB"):
        load_mtx(path)


def test_huge_sparse_input_is_refused_before_densifying():
    A = sp.csr_matrix((1_000_000, 1_000_000))
    with pytest.raises(ValueError, match="GiB"):
        Problem.from_arrays(A, np.ones((1, 1_000_000)))


def test_float_shard_indices_are_refused():
    with pytest.raises(ValueError, match="integer"):
        make_shards(4, 2, [[0.0, 1.5], [2.0, 3.0]])
    ok = make_shards(4, 2, [np.array([0, 1], dtype=np.int32), np.array([2, 3], dtype=np.int64)])
    assert [s.tolist() for s in ok] == [[0, 1], [2, 3]]


def test_generators_refuse_huge_sizes_before_allocating():
    from eagle_dist.data import controlled, distribution
    from eagle_dist.distributed import alpha_problem
    for make in (lambda: controlled(10**6, 10**5), lambda: distribution("gaussian", 10**6, 10**5),
                 lambda: alpha_problem(10**5, 10**5, 8)):
        with pytest.raises(ValueError, match="GiB"):
            make()
