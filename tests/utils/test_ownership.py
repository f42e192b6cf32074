"""Folder ownership (dakter_hf.utils.ownership): the lock that keeps a second writer out."""

import os
import subprocess
import sys

from helpers import run_generate

from dakter_hf.utils.ownership import LOCK, FolderLock


def test_a_second_writer_is_refused_by_the_lock(pipeline_dir, tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "gen"
        out.mkdir()
        (out / LOCK).write_text(str(holder.pid))
        assert run_generate(pipeline_dir, out) == 2
        assert f"PID {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert run_generate(pipeline_dir, out) == 0  # the holder is gone: its stale lock is taken over
    assert not (out / LOCK).exists()
    with FolderLock(str(tmp_path / "x")) as lock:
        assert open(lock.path).read() == str(os.getpid())
    assert not os.path.exists(lock.path)
