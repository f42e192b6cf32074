"""A training process stops when the `accelerate launch` that started it ends (issue 16, point 7).

What accelerate does (1.15, `accelerate/commands/launch.py`): the single-process launcher
(`simple_launcher`, also `--cpu`) runs `subprocess.Popen(cmd).wait()` and handles no signal.
TERM ends the launcher at once (Python's default action), an interrupt (SIGINT) raises
KeyboardInterrupt inside its `wait()`, and in both cases the child is re-parented to PID 1 and
trains on. (The multi-process launchers run torch's elastic agent, which forwards TERM and INT
to its workers; KILL on the launcher reaches no child in any of them.)

`stop_with_launcher`, called by every training launcher (`utils.arguments.run_launcher`),
makes the child notice its launcher's end, whatever the cause:

* Linux: `prctl(PR_SET_PDEATHSIG, SIGTERM)`: the kernel sends SIGTERM when the parent dies,
  KILL included; a parent that died before the call is caught by comparing `os.getppid()`.
* elsewhere, or where prctl fails: a daemon thread polls `os.getppid()` every second and sends
  the process SIGTERM when the parent changes.

SIGTERM (from either, or from anyone) then raises `LauncherGone`, a SystemExit with code 143,
in the main thread, so `finally` blocks and context managers run: an atomic write in progress
removes its temporary file, the last complete checkpoint stays for `--resume_from_checkpoint`.
A second SIGTERM ends the process at once.

Only under an accelerate launcher (its launchers set ACCELERATE_MIXED_PRECISION for the
scripts they start): a script run from a shell keeps running when the shell goes (`nohup`).
DAKTER_STOP_WITH_PARENT=1 or 0 forces the watch on or off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from typing import Optional


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_SECONDS = 1.0
EXIT_CODE = 128 + signal.SIGTERM


class LauncherGone(SystemExit):
    """Raised in the main thread by SIGTERM once `stop_with_launcher` watches: the run stops, cleanly."""

    def __init__(self):
        super().__init__(EXIT_CODE)


def launched_by_accelerate(environ=os.environ) -> bool:
    """Whether to watch the parent: under an accelerate launcher, or as DAKTER_STOP_WITH_PARENT says."""
    forced = environ.get("DAKTER_STOP_WITH_PARENT", "").strip().lower()
    if forced in ("1", "true", "yes"):
        return True
    if forced in ("0", "false", "no"):
        return False
    return "ACCELERATE_MIXED_PRECISION" in environ


def stop_with_launcher(prog: str, force: Optional[bool] = None) -> Optional[str]:
    """Make this process stop (SIGTERM -> `LauncherGone`) when its parent ends; returns how it watches.

    "pdeathsig" (Linux), "poll" (a daemon thread), or None when not under a launcher (see the
    module docstring) or not called from the main thread (signal handlers live there).
    """
    if not (launched_by_accelerate() if force is None else force):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    parent = os.getppid()
    _install_handler(prog, parent)
    how = "pdeathsig" if _set_parent_death_signal(signal.SIGTERM) else "poll"
    if how == "poll":
        threading.Thread(target=_poll_parent, args=(parent,), name="dakter-parent-watch", daemon=True).start()
    if parent == 1 or os.getppid() != parent:  # the launcher ended before the watch began
        os.kill(os.getpid(), signal.SIGTERM)
    return how


def _install_handler(prog: str, parent: int) -> None:
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return  # someone else's handler (a framework's) decides what TERM does

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second TERM ends the process at once
        message = (
            f"{prog}: SIGTERM (the launcher, pid {parent}, has ended or was stopped): stopping; rerun with "
            "--resume_from_checkpoint to continue from the last complete checkpoint\n"
        )
        os.write(sys.stderr.fileno(), message.encode())  # not print(): a signal may arrive inside a print
        raise LauncherGone()

    signal.signal(signal.SIGTERM, stop)


def _set_parent_death_signal(signum: int) -> bool:
    """Linux prctl(PR_SET_PDEATHSIG); False where it is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _poll_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
