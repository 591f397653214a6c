"""A column store may come from someone else: nothing in its manifest is trusted (issue 17).

Every file must resolve inside the store folder to a regular file with the header the manifest
implies, and its recorded size and SHA-256 must match; a failed write leaves nothing behind.
Each test below failed on the version-1 store code (it read any path, hung on a FIFO, solved an
edited part against a stale D_true as 'converged')."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from eagle_dist import solve
from eagle_dist.data.store import ColumnStore, StoreError, write_store


@pytest.fixture()
def store(tmp_path):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 40))
    W = rng.standard_normal((1, 6))
    return write_store(tmp_path / "s", A, W @ A, None, W, part_columns=10)


def _edit(store, fn):
    path = store.path / "manifest.json"
    man = json.loads(path.read_text())
    fn(man)
    path.write_text(json.dumps(man))


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd", "parts/../../x.npy"])
def test_a_manifest_cannot_name_a_file_outside_the_store(store, target):
    _edit(store, lambda m: m["parts"][1].__setitem__("A", target))
    with pytest.raises(StoreError, match="outside the store"):
        ColumnStore.open(store.path)


def test_a_symlink_out_of_the_store_is_refused(store, tmp_path):
    outside = tmp_path / "secret.npy"
    np.save(outside, np.zeros((10, 6)))
    part = store.path / "parts" / "A-00001.npy"
    part.unlink()
    os.symlink(outside, part)
    with pytest.raises(StoreError, match="outside the store"):
        ColumnStore.open(store.path)


def test_a_fifo_as_a_part_is_refused_not_read(store):
    part = store.path / "parts" / "B-00002.npy"
    part.unlink()
    os.mkfifo(part)
    with pytest.raises(StoreError, match="not a regular file"):
        ColumnStore.open(store.path)


def test_a_part_edited_after_writing_is_refused(store):
    """Same size, different bytes: the SHA-256 check refuses it where the part is read (a
    worker), so it is never solved against the stale D_true."""
    part = store.path / "parts" / "A-00003.npy"
    a = np.load(part)
    a[0, 0] += 1.0
    np.save(part, a)                                  # same header, same size
    s = ColumnStore.open(store.path)                  # sizes match: opening is fine …
    with pytest.raises(StoreError, match="SHA-256"):
        s.columns((30, 40))                           # … reading it is not
    with pytest.raises(StoreError, match="SHA-256"):
        solve(s, "eagle", workers=2)
    np.save(part, a[:, :5])                           # another shape / size
    with pytest.raises(StoreError, match="shape"):
        ColumnStore.open(store.path)


@pytest.mark.parametrize("what,payload,msg", [
    ("complex", lambda a: a.astype(np.complex128), "dtype"),
    ("int", lambda a: a.astype(np.int64), "dtype"),
    ("strings", lambda a: a.astype("U8"), "dtype"),
    ("1-D", lambda a: a.ravel(), "shape"),
    ("rows", lambda a: a[:, :3], "shape"),
])
def test_parts_of_the_wrong_kind_are_refused_naming_the_file(store, what, payload, msg):
    part = store.path / "parts" / "A-00000.npy"
    np.save(part, payload(np.load(part)))
    with pytest.raises(StoreError, match=msg) as exc:
        ColumnStore.open(store.path)
    assert "A-00000.npy" in str(exc.value)


def test_nan_in_a_part_is_named(tmp_path):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 20))
    s = write_store(tmp_path / "s", A, A[:1], part_columns=10)
    man = json.loads((s.path / "manifest.json").read_text())
    man["version"] = 1                                # a version-1 store (no hashes) …
    (s.path / "manifest.json").write_text(json.dumps(man))
    part = s.path / "parts" / "A-00001.npy"
    a = np.load(part)
    a[3, 2] = np.nan                                  # … with a NaN in column 13
    np.save(part, a)
    s = ColumnStore.open(s.path)
    with pytest.raises(StoreError, match="column 13 has NaN"):
        s.columns((0, 20))


@pytest.mark.parametrize("damage,msg", [
    (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
    (lambda p: (p / "parts" / "A-00000.npy").write_bytes(b"\x93NUMPY garbage"), "not a readable"),
    (lambda p: (p / "C.npy").unlink(), "missing"),
    (lambda p: _set(p, "n", "six"), "positive integer"),
    (lambda p: _set(p, "d_query", 3), "shape"),
    (lambda p: _set(p, "parts", [{"start": 0}]), "parts\\[0\\]"),
])
def test_damaged_stores_give_one_clear_error(store, damage, msg):
    damage(store.path)
    with pytest.raises(ValueError, match=msg):
        ColumnStore.open(store.path)


def _set(path, key, value):
    man = json.loads((path / "manifest.json").read_text())
    man[key] = value
    (path / "manifest.json").write_text(json.dumps(man))


def test_a_write_that_fails_half_way_leaves_nothing_that_blocks_a_retry(tmp_path):
    rng = np.random.default_rng(2)
    A = rng.standard_normal((4, 30))

    def blocks(fail):
        for i in range(0, 30, 10):
            if fail and i == 20:
                raise OSError("disk full (simulated)")
            yield A[:, i:i + 10], A[:1, i:i + 10]
    with pytest.raises(OSError, match="disk full"):
        write_store(tmp_path / "s", blocks=blocks(True), n=4, n_query=1)
    assert sorted(os.listdir(tmp_path)) == []         # no half store, no temporary folder
    s = write_store(tmp_path / "s", blocks=blocks(False), n=4, n_query=1)
    np.testing.assert_array_equal(s.columns((0, 30))[0], A)
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        write_store(tmp_path / "f", A, A[:1])


def test_the_cli_reports_a_bad_store_without_a_traceback(store, capsys):
    from eagle_dist.cli import main
    _edit(store, lambda m: m["parts"][0].__setitem__("B", "/etc/hostname"))
    with pytest.raises(SystemExit) as exit_:
        main(["solve", "--store", str(store.path), "--workers", "2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "outside the store" in err and "Traceback" not in err
