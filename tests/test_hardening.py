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


# ---------------------------------------------------------------------------------------------
# configs: reading, types (NumPy scalars are numbers), values, shipped names


def test_config_read_is_bounded(tmp_path):
    # /dev/zero (or a pipe that never ends) used to be read to the end: an endless read
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="is not a config"):
        load_config("/dev/zero")
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("body,msg", [("inherit: ''\n", "inherit: must be one file name"),
                                      ("inherit: [a.yaml]\n", "inherit: must be one file name")])
def test_bad_inherit_values(tmp_path, body, msg):
    (tmp_path / "c.yaml").write_text(body)
    with pytest.raises(ValueError, match=msg):
        load_config(str(tmp_path / "c.yaml"))


def test_self_inherit_is_a_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("inherit: a.yaml\n")
    with pytest.raises(ValueError, match=r"cycle.*a\.yaml -> .*a\.yaml"):
        load_config(str(tmp_path / "a.yaml"))


def test_config_accepts_numpy_scalars_and_writes_them_back(tmp_path):
    from eagle_dist.config import config_from_dict, save_config
    cfg = config_from_dict({
        "problem": {"source": np.str_("controlled"), "n": np.int64(12), "d": np.int32(10),
                    "kappa": np.float32(100.0), "seed": np.uint8(3), "rank": np.int64(4)},
        "solve": {"workers": np.int64(2), "tol": np.float64(1e-9), "verify": np.bool_(False),
                  "shards": [np.array([0, 1, 2, 3, 4]), np.arange(5, 10, dtype=np.int32)]}})
    assert cfg.problem.n == 12 and type(cfg.problem.n) is int
    assert type(cfg.problem.kappa) is float and cfg.solve.verify is False
    assert cfg.solve.shards == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    save_config(cfg, tmp_path / "c.yaml")           # plain YAML types: safe_dump used to refuse
    assert load_config(str(tmp_path / "c.yaml")) == cfg


@pytest.mark.parametrize("section,key,value,msg", [
    ("solve", "workers", np.float32(2.5), "solve.workers=.*must be an integer"),   # was 2
    ("solve", "workers", True, "solve.workers=True must be an integer"),           # was 1
    ("solve", "tol", True, "solve.tol=True must be a number"),
    ("solve", "verify", "yes", "solve.verify='yes' must be true or false"),
    ("solve", "device", 0, "solve.device=0 must be a string"),                    # was a TypeError
    ("output", "dir", 5, "output.dir=5 must be a string"),
    ("solve", "method", None, "solve.method is null"),
    ("solve", "shards", [[0.0, 1.5], [2, 3]], "solve.shards=.*shard 0 holds 0.0"),
    ("solve", "shards", [0, 1, 2], "solve.shards=.*shard 0 is 0"),
    ("solve", "shards", "blocks", "solve.shards='blocks' must be contiguous, random"),
    ("solve", "dtype", "float16", "solve.dtype='float16'"),
    ("solve", "normalization", "none", "solve.normalization='none'"),
    ("solve", "time_budget", -1, r"solve.time_budget=-1.0"),
    ("solve", "seed", -1, "solve.seed=-1 must be a non-negative integer"),
    ("problem", "seed", -2, "problem.seed=-2"),
    ("problem", "source", "cauchy", "problem.source='cauchy' is unknown"),
    ("problem", "kappa", 0.5, "problem.kappa=0.5"),
    ("problem", "noise", float("nan"), "problem.noise=nan"),
    ("problem", "alpha", 1.5, "problem.alpha=1.5"),
    ("problem", "rank", 0, "problem.rank=0"),
    ("problem", "c_block", "diag", "problem.c_block='diag'"),
])
def test_bad_config_types_and_values(section, key, value, msg):
    from eagle_dist.config import config_from_dict
    with pytest.raises(ValueError, match=msg):
        config_from_dict({section: {key: value}})


def test_mtx_source_needs_a_path():
    from eagle_dist.config import config_from_dict
    with pytest.raises(ValueError, match="problem.path=None is needed with source: mtx"):
        config_from_dict({"problem": {"source": "mtx"}})


def test_yaml_1_1_number_strings_are_numbers(tmp_path):
    (tmp_path / "c.yaml").write_text("problem: {n: 1e2, kappa: 1e3}\nsolve: {tol: 1e-8}\n")
    cfg = load_config(str(tmp_path / "c.yaml"))
    assert cfg.problem.n == 100 and cfg.problem.kappa == 1e3 and cfg.solve.tol == 1e-8


def test_shipped_configs_resolve_from_any_folder(tmp_path, monkeypatch):
    from eagle_dist.config import shipped_configs_dir
    monkeypatch.chdir(tmp_path)                 # no configs/ here: found next to the package
    for name in ("distributed", "distributed.yaml", "configs/distributed_gd.yaml"):
        assert load_config(name).problem.source == "alpha"
    assert {"distributed.yaml", "distributed_gd.yaml", "suitesparse_sharded.yaml"} <= \
        set(__import__("os").listdir(shipped_configs_dir()))


def test_pyproject_ships_the_configs_folder():
    """The wheel maps the top-level configs/ into the package (checked by building one:
    ``pip wheel . --no-deps`` lists eagle_dist/configs/*.yaml)."""
    import pathlib
    import tomllib
    root = pathlib.Path(__file__).resolve().parents[1]
    tool = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "eagle_dist.configs" in tool["packages"]
    assert tool["package-dir"]["eagle_dist.configs"] == "configs"
    assert tool["package-data"]["eagle_dist.configs"] == ["*.yaml", "train/*.yaml"]
    assert list((root / "configs").glob("*.yaml"))


def test_no_pointers_to_documents_users_do_not_have():
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    files = ["eagle_dist/config.py", "eagle_dist/cli.py", "eagle_dist/data/generators.py",
             "eagle_dist/data/suitesparse.py", "eagle_dist/distributed/shards.py",
             *[str(p.relative_to(root)) for p in (root / "eagle_dist" / "model").glob("*.py")],
             *[str(p.relative_to(root)) for p in (root / "configs" / "train").glob("*.yaml")],
             *[str(p.relative_to(root)) for p in (root / "configs").glob("*.yaml")]]
    for f in files:
        text = (root / f).read_text()
        for word in ("SPEC", "§", "PAPER-NOTES", "issue target"):
            assert word not in text, (f, word)


# ---------------------------------------------------------------------------------------------
# CLI


@pytest.mark.parametrize("argv,msg", [
    (["--methods", ""], "--methods '' names no method"),
    (["--methods", " , "], "names no method"),
    (["--shards", "blocks"], "argument --shards: invalid choice: 'blocks'"),
    (["--seed", "-1"], "seed=-1 must be a non-negative integer"),
    (["--noise", "nan"], "noise=nan must be a finite number"),
    (["--kappa", "inf"], "kappa=inf must be a finite number"),
    (["--distribution", "alpha", "--alpha", "nan"], "alpha=nan"),
])
def test_more_bad_cli_arguments_exit_2(capsys, argv, msg):
    code, err = _exit(capsys, ["solve", "--n", "8", "--d", "8", *argv])
    assert code == 2 and msg in err and "Traceback" not in err, err


def test_unwritable_out_is_refused_before_solving(tmp_path, capsys, monkeypatch):
    import eagle_dist.api as api
    monkeypatch.setattr(api, "solve", lambda *a, **k: pytest.fail("solved before checking --out"))
    f = tmp_path / "afile"
    f.write_text("x")
    code, err = _exit(capsys, ["solve", "--n", "8", "--d", "8", "--out", str(f / "sub")])
    assert code == 2 and "is not writable" in err and "Not a directory" in err


def test_out_probe_does_not_collide(tmp_path):
    # the old fixed probe name failed on a folder that held an entry of that name
    from eagle_dist.cli import prepare_out_dir
    (tmp_path / ".eagle_dist_write_test").mkdir()
    assert prepare_out_dir(str(tmp_path)) == str(tmp_path)


def test_run_refuses_an_output_dir_holding_another_runs_results(tmp_path, capsys, monkeypatch):
    import eagle_dist.api as api
    monkeypatch.setattr(api, "run_config", lambda *a, **k: pytest.fail("ran before checking"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text("{}")           # e.g. written by the torchrun entry
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"problem: {{n: 8, d: 8}}\nsolve: {{workers: 1}}\noutput: {{dir: {out}}}\n")
    code, err = _exit(capsys, ["run", "--config", str(cfg)])
    assert code == 2 and "output.dir of" in err and "--overwrite" in err
    assert (out / "result.json").read_text() == "{}"


def test_os_errors_end_in_one_line(capsys, monkeypatch):
    import eagle_dist.cli as cli

    def boom(args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cli, "cmd_info", boom)
    code, err = _exit(capsys, ["info"])
    assert code == 2 and err.startswith("eagle-dist: error:") and "No space left" in err


# ---------------------------------------------------------------------------------------------
# Matrix Market headers


@pytest.mark.parametrize("body,msg", [
    ("3 3 1000000000000\n1 1 1.0\n", "announces 1000000000000 entries for a 3 x 3"),
    ("200000 200000 20000000000\n1 1 1.0\n", "GiB"),
    ("% only comments\n", "no size line"),
    ("3 3\n1 1 1.0\n", "expected 'rows cols entries'"),
])
def test_mtx_header_is_checked_before_reading(tmp_path, body, msg):
    # the impossible entry count used to reach SciPy, which tried to allocate 3.6 TiB
    path = tmp_path / "h.mtx"
    path.write_text("%%MatrixMarket matrix coordinate real general\n" + body)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=msg):
        load_mtx(path)
    assert time.perf_counter() - t0 < 5


def test_dense_array_mtx_header(tmp_path):
    path = tmp_path / "a.mtx"
    path.write_text("%%MatrixMarket matrix array real general\n2 2\n1\n2\n3\n4\n")
    assert load_mtx(path).toarray().tolist() == [[1.0, 3.0], [2.0, 4.0]]
    path.write_text("%%MatrixMarket matrix array real general\n300000 300000\n1\n")
    with pytest.raises(ValueError, match="GiB"):
        load_mtx(path)


# ---------------------------------------------------------------------------------------------
# generators and shards: NumPy scalars accepted, everything else named


def test_generators_accept_numpy_scalars():
    from eagle_dist.data import controlled, distribution, paper_training
    from eagle_dist.distributed import alpha_problem
    i = np.int64
    p = controlled(i(8), i(6), i(2), i(1), kappa=np.float32(10), rank=i(4),
                   noise=np.float32(0.0), seed=i(3))
    assert p.A.shape == (8, 6) and p.meta["seed"] == 3 and type(p.meta["seed"]) is int
    g = distribution(np.str_("gaussian"), i(6), np.int32(5), rank=i(3), seed=np.uint16(1))
    assert g.A.shape == (6, 5)
    assert paper_training(i(6), i(6), s=i(3), alpha0=np.float32(0.7), seed=i(0)).A.shape == (6, 6)
    q, shards = alpha_problem(i(6), i(6), i(2), alpha=np.float64(0.4), kappa_max=np.float32(10),
                              n_query=i(1), d_query=i(1), seed=i(2))
    assert q.A.shape == (6, 12) and len(shards) == 2


@pytest.mark.parametrize("call,msg", [
    (lambda g: g["controlled"](4, 4, seed=-1), r"^seed=-1 must be a non-negative integer"),
    (lambda g: g["controlled"](4, 4, seed=1.5), r"^seed=1\.5"),
    (lambda g: g["controlled"](4, 4, kappa="10"), r"^kappa='10' must be a finite number"),
    (lambda g: g["controlled"](4, 4, noise=float("nan")), r"^noise=nan"),
    (lambda g: g["controlled"](4, 4, n_query=True), r"^n_query=True must be a positive integer"),
    (lambda g: g["distribution"]("gaussian", 4, 4, rank=2.5), r"^rank=2\.5 must be an integer"),
    (lambda g: g["distribution"]("gaussian", 4, 4, noise=-1), r"^noise=-1"),
    (lambda g: g["paper_training"](alpha0=-1.0), r"^alpha0=-1\.0 must be a finite number > 0"),
    (lambda g: g["paper_training"](noise=-1.0), r"^noise=-1\.0"),
    (lambda g: g["alpha_problem"](6, 6, 2, kappa_max=-1), r"^kappa_max=-1 must be a finite number >= 1"),
    (lambda g: g["alpha_problem"](6, 6, 2, kappa_max=0.5), r"^kappa_max=0\.5"),
    (lambda g: g["alpha_problem"](6, 6, 2, alpha="1"), r"^alpha='1' must be a finite number"),
    (lambda g: g["alpha_problem"](6, 6, 2, noise=float("nan")), r"^noise=nan"),
    (lambda g: g["alpha_problem"](6, 6, 2, seed=-3), r"^seed=-3"),
])
def test_generator_values_are_named(call, msg):
    from eagle_dist.data import controlled, distribution, paper_training
    from eagle_dist.distributed import alpha_problem
    g = dict(controlled=controlled, distribution=distribution, paper_training=paper_training,
             alpha_problem=alpha_problem)
    with pytest.raises(ValueError, match=msg):
        call(g)


@pytest.mark.parametrize("args,kw,exc,msg", [
    ((4.5, 2), {}, ValueError, r"^d=4\.5 \(the number of columns of A\) must be a positive integer"),
    ((4, True), {}, ValueError, r"^workers=True"),
    ((4, 2, None), {}, TypeError, r"^shards=None must be 'contiguous', 'random' or a list"),
    ((4, 2, 7), {}, TypeError, r"^shards=7"),
    ((4, 4, [0, 1, 2, 3]), {}, ValueError, r"^shard 0 is 0, not a list of column indices"),
    ((4, 2, np.array([[0, 1], [2, 3]], dtype=np.float64)), {}, ValueError, r"float64 entries"),
    ((4, 2, [[True, False], [2, 3]]), {}, ValueError, r"bool entries"),
    ((4, 2, "random"), {"seed": -1}, ValueError, r"^seed=-1"),
])
def test_make_shards_rejects(args, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        make_shards(*args, **kw)


def test_make_shards_accepts_numpy_integers():
    out = make_shards(np.int64(6), np.int32(2), "random", seed=np.int64(1))
    assert sorted(np.concatenate(out).tolist()) == list(range(6))
    out = make_shards(np.int64(4), np.int64(2), np.array([[0, 1], [2, 3]], dtype=np.uint8))
    assert [s.tolist() for s in out] == [[0, 1], [2, 3]]


# ---------------------------------------------------------------------------------------------
# as_float_array: torch sparse / bfloat16 / meta tensors, masked arrays


def test_torch_inputs_sparse_bf16_and_meta():
    import torch
    A = np.arange(1.0, 7.0).reshape(3, 2)
    p = Problem.from_arrays(torch.tensor(A).to_sparse(), torch.ones(1, 2, dtype=torch.bfloat16))
    assert np.array_equal(p.A, A) and p.B.tolist() == [[1.0, 1.0]]
    with pytest.raises(TypeError, match=r"^A is a torch tensor on the 'meta' device"):
        Problem.from_arrays(torch.empty(3, 2, device="meta"), np.ones((1, 2)))
    huge = torch.sparse_coo_tensor(torch.zeros((2, 0), dtype=torch.long), torch.zeros(0),
                                   (1_000_000, 1_000_000), check_invariants=True)
    with pytest.raises(ValueError, match=r"^A \(sparse torch tensor .*GiB"):
        Problem.from_arrays(huge, np.ones((1, 1_000_000)))


def test_masked_arrays():
    A = np.ma.masked_array(np.eye(3), mask=np.eye(3, dtype=bool))
    with pytest.raises(ValueError, match=r"^A is a masked array with 3 masked entries"):
        Problem.from_arrays(A, np.ones((1, 3)))
    p = Problem.from_arrays(np.ma.masked_array(np.eye(3)), np.ones((1, 3)))
    assert type(p.A) is np.ndarray and np.array_equal(p.A, np.eye(3))


@pytest.mark.parametrize("body,msg", [
    ("solve: {1: 2, wrokers: 3}\n", r"unknown key\(s\) \['1', 'wrokers'\]"),    # sorted() failed
    ("solve: []\n", "section 'solve' must be a mapping"),                       # was ignored
    ("7: {}\n", r"unknown section\(s\) \['7'\]"),
])
def test_odd_config_keys_and_sections(tmp_path, body, msg):
    (tmp_path / "c.yaml").write_text(body)
    with pytest.raises(ValueError, match=msg):
        load_config(str(tmp_path / "c.yaml"))
