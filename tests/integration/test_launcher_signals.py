"""`accelerate launch` interrupted (issue 16, point 7): TERM, INT or KILL on the launcher and no process trains on.

Why: "killing `accelerate launch` (TERM or KILL) leaves its child process training on, re-parented to PID 1".
accelerate's single-process launcher only `Popen(...).wait()`s; the training script watches its parent itself
(`dakter_hf.utils.launcher`).
"""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from helpers import REPO_ROOT
from student_helpers import launch_student_command

from dakter_hf.data.save import save_dataset
from dakter_hf.data.simulate import simulate_sar
from dakter_hf.utils import launcher


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("launcher_data")
    save_dataset(simulate_sar(8, num_classes=2, size=32, seed=0, num_test_samples=2), str(root / "real"))
    return str(root / "real")


def _launch(real, out, log):
    command = [
        *launch_student_command(real),
        *["--output_dir", str(out), "--max_steps", "1000000"],  # hours: it trains until stopped
        *"--per_device_train_batch_size 4 --logging_steps 1 --save_strategy no --disable_tqdm true".split(),
        *"--report_to none".split(),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("DAKTER_STOP_WITH_PARENT", None)
    # its own session: the signal goes to the launcher alone, as `kill PID` does (not to a terminal's group);
    # SIGINT at its default, as a shell starts a command: a test suite run in the background (`cmd &`) inherits
    # SIGINT ignored, and a Python launcher that ignores SIGINT never stops on it
    return subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["TERM", "INT", "KILL"])
def test_no_process_trains_on_after_the_launcher_is_stopped(real, tmp_path, signum):
    log_path = tmp_path / "launch.log"
    with open(log_path, "wb") as log:
        process = _launch(real, tmp_path / "run", log)
    children = []
    try:
        launched = psutil.Process(process.pid)
        deadline = time.time() + 300
        while "'loss'" not in log_path.read_text(errors="replace"):  # the child is training
            assert process.poll() is None and time.time() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.5)
        children = launched.children(recursive=True)
        assert children, "the launcher has no child process"
        os.kill(process.pid, signum)
        process.wait(timeout=60)
        deadline = time.time() + 30
        while any(_alive(child) for child in children) and time.time() < deadline:
            time.sleep(0.2)
        assert not [child.pid for child in children if _alive(child)], log_path.read_text(errors="replace")[-3000:]
        if signum != signal.SIGKILL:
            assert "has ended or was stopped): stopping" in log_path.read_text(errors="replace")
    finally:  # nothing of a failed case trains on after the test
        if process.poll() is None:
            children += psutil.Process(process.pid).children(recursive=True)
            process.kill()
        for child in children:
            if _alive(child):
                child.kill()


def test_the_watch_is_only_for_launched_runs(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.delenv("DAKTER_STOP_WITH_PARENT", raising=False)
    assert not launcher.launched_by_accelerate()  # from a shell (`nohup`): the run outlives the shell
    assert launcher.stop_with_launcher("x") is None
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert launcher.launched_by_accelerate()
    monkeypatch.setenv("DAKTER_STOP_WITH_PARENT", "0")
    assert not launcher.launched_by_accelerate()
    monkeypatch.setenv("DAKTER_STOP_WITH_PARENT", "1")
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert launcher.launched_by_accelerate()


def test_the_polling_fallback_stops_a_child_whose_parent_dies(tmp_path):
    """Where prctl is missing: a parent that exits, and the child's daemon thread sends it SIGTERM."""
    script = tmp_path / "child.py"
    script.write_text(
        "import os, sys, time\n"
        "from dakter_hf.utils import launcher\n"
        "launcher._set_parent_death_signal = lambda signum: False\n"
        "print(launcher.stop_with_launcher('child', force=True), flush=True)\n"
        "try:\n"
        "    time.sleep(120)\n"
        "finally:\n"
        "    open(sys.argv[1], 'w').write('cleaned up')\n"
    )
    parent = (
        "import subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, {str(script)!r}, {str(tmp_path / 'done')!r}], stdout=sys.stdout)\n"
        "print(child.pid, flush=True)\n"
        "import time; time.sleep(3)\n"  # then the parent exits without waiting
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", parent], env=env, capture_output=True, text=True, timeout=60)
    lines = result.stdout.split()
    child = int(lines[0])
    deadline = time.time() + 15
    while not (tmp_path / "done").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (tmp_path / "done").read_text() == "cleaned up" and "poll" in lines  # `finally` blocks ran
    try:
        process = psutil.Process(child)
    except psutil.NoSuchProcess:
        return
    deadline = time.time() + 15
    while _alive(process) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(process)
