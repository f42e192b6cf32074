"""Atomic writes through unique temporary names, and the one JSON record reader."""

import json
import os
import threading

import numpy as np
import pytest

from dakter_hf.experiment.steps import DONE, read_done
from dakter_hf.utils.files import atomic_path, atomic_write, atomic_write_json, atomic_write_text, read_json
from dakter_hf.utils.ownership import MARKER, read_marker, remove_leftovers


def test_atomic_write_text_and_json(tmp_path):
    path = tmp_path / "a.txt"
    assert atomic_write_text(str(path), "héllo\n") == str(path)
    assert path.read_bytes() == "héllo\n".encode("utf-8")
    atomic_write_json(str(tmp_path / "b.json"), {"x": [1, 2]})
    assert (tmp_path / "b.json").read_text() == '{\n  "x": [\n    1,\n    2\n  ]\n}\n'
    with pytest.raises(ValueError):  # strict JSON: no NaN written
        atomic_write_json(str(tmp_path / "c.json"), {"x": float("nan")})
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.json"]


def test_temporary_is_unique_hidden_and_beside_the_target(tmp_path):
    target = tmp_path / "shard.parquet"
    with atomic_path(str(target)) as first, atomic_path(str(target)) as second:
        assert first != second
        for temporary in (first, second):
            name = os.path.basename(temporary)
            assert os.path.dirname(temporary) == str(tmp_path)
            assert name.startswith(".shard.parquet.") and name.endswith(".tmp")
            assert os.path.isfile(temporary) and not target.exists()
        assert not list(tmp_path.glob("*.parquet"))  # a reader globbing the real names sees nothing
        open(first, "w").write("first")
        open(second, "w").write("second")
    assert target.read_text() == "first"  # the last one to finish (the outer one) wins, whole
    assert os.listdir(tmp_path) == ["shard.parquet"]


def test_two_concurrent_writers_do_not_collide(tmp_path):
    target = str(tmp_path / "record.json")
    writers = 8
    inside, release, errors = threading.Barrier(writers + 1), threading.Event(), []

    def write(n):
        try:
            with atomic_write(target) as handle:
                handle.write(json.dumps({"writer": n, "payload": [n] * 1000}))
                inside.wait(timeout=30)  # every writer has its temporary open at once
                release.wait(timeout=30)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    inside.wait(timeout=30)
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".tmp")]) == writers  # one temporary each
    release.set()
    for thread in threads:
        thread.join()
    assert not errors
    record = read_json(target)
    assert record["payload"] == [record["writer"]] * 1000  # one writer's file, never a mix
    assert os.listdir(tmp_path) == ["record.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_json(str(path), {"old": True})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(str(path)) as handle:
            handle.write('{"new": ')
            raise RuntimeError("disk full")
    assert read_json(str(path)) == {"old": True}
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(str(path)) as temporary:
            open(temporary, "w").write("half")
            raise KeyboardInterrupt
    assert read_json(str(path)) == {"old": True}
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_atomic_path_for_writers_that_want_a_path(tmp_path):
    path = tmp_path / "kl.npy"
    with atomic_path(str(path), suffix=".tmp.npy") as temporary:
        assert temporary.endswith(".tmp.npy")
        np.save(temporary, np.arange(4))  # np.save adds .npy to any other name
    assert np.array_equal(np.load(path), np.arange(4))
    assert os.listdir(tmp_path) == ["kl.npy"]
    with atomic_write(str(tmp_path / "b.bin"), "wb") as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(str(tmp_path / "c"), "a"):
            pass


def test_written_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_text(str(tmp_path / "a.txt"), "x")
        with open(tmp_path / "b.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(umask)
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == os.stat(tmp_path / "b.txt").st_mode & 0o777 == 0o644


def test_leftover_temporaries_match_the_cleanup_patterns(tmp_path):
    """A killed writer leaves `.NAME.<random>.tmp`: the "*.tmp" leftover pattern still finds it."""
    leftover = tmp_path / ".shard-0.parquet.0123456789ab.tmp"
    leftover.write_text("half")
    (tmp_path / "keep.parquet").write_text("done")
    assert remove_leftovers(str(tmp_path), {"*.tmp": "half-written file"}) == [str(leftover)]
    assert os.listdir(tmp_path) == ["keep.parquet"]


def test_read_json(tmp_path):
    assert read_json(str(tmp_path / "absent.json")) is None
    assert read_json(str(tmp_path)) is None  # a folder is no record
    atomic_write_json(str(tmp_path / "r.json"), {"kind": "generate", "n": 1})
    assert read_json(str(tmp_path / "r.json")) == {"kind": "generate", "n": 1}
    (tmp_path / "broken.json").write_text('{"kind": ')
    with pytest.raises(ValueError):  # a damaged record is an error, not "absent"
        read_json(str(tmp_path / "broken.json"))
    assert read_marker(str(tmp_path)) is None and read_done(str(tmp_path)) is None
    atomic_write_json(str(tmp_path / MARKER), {"kind": "data"})
    atomic_write_json(str(tmp_path / DONE), {"result": 3})
    assert read_marker(str(tmp_path)) == {"kind": "data"} and read_done(str(tmp_path)) == {"result": 3}
