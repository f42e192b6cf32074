"""Cached steps: each step's output lives under a key built from everything it depends on.

A step is (kind, settings, inputs): `settings` is its slice of the experiment file,
`inputs` the keys of the steps it reads (and a fingerprint of the source data), and the
code version is added to both. The key names a folder `OUTPUT_DIR/<kind>/<label>-<key>`;
`done.json` there holds the step's result. So a re-run skips every finished step, an
arm added later runs only what it does not share, and a step cut short is entered again
and continued by its own command (checkpoints, finished shards).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from dakter_hf import __version__
from dakter_hf.utils.files import atomic_write_json, read_json
from dakter_hf.utils.ownership import FolderLock


DONE = "done.json"


def code_version() -> str:
    """The package version: steps are reused across commits of one release (a new release recomputes;
    after changing the code yourself, use a new output folder or --overwrite). Each step also records
    the exact code it ran with (`code_description`), and the report lists them."""

    return __version__


def code_description() -> Dict[str, Any]:
    """Package version, plus the git commit (and whether the tree had changes) of a source checkout."""

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
        dirty = (
            bool(
                subprocess.run(
                    ["git", "status", "--porcelain", "--untracked-files=no"],
                    cwd=here,
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
            )
            if commit
            else None
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"package_version": code_version(), "git_commit": commit, "git_dirty": dirty}


def step_key(kind: str, settings: Dict[str, Any], inputs: Dict[str, Any]) -> str:
    payload = json.dumps(
        {"kind": kind, "settings": settings, "inputs": inputs, "code": code_version()}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class Step:
    """One unit of cached work; `run(step, work_dir)` gets the step itself and returns a JSON-able result."""

    kind: str
    label: str
    settings: Dict[str, Any]
    inputs: Dict[str, Any]
    run: Callable[["Step", str], Dict[str, Any]] = field(repr=False, compare=False)
    budget_minutes: Optional[float] = None  # for the ETA before a step of this kind has been timed

    @property
    def key(self) -> str:
        return step_key(self.kind, self.settings, self.inputs)

    def folder(self, root: str) -> str:
        """`<root>/<kind>/<label>-<key>`; the key alone finds it (another plan may label the same step otherwise)."""
        found = glob.glob(os.path.join(glob.escape(os.path.join(root, self.kind)), f"*-{self.key}"))
        return (
            found[0]
            if found
            else os.path.join(root, self.kind, f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', self.label)}-{self.key}")
        )


def read_done(folder: str) -> Optional[Dict[str, Any]]:
    """The step's record (`done.json`), or None while the step is not done."""
    return read_json(os.path.join(folder, DONE))


def run_step(step: Step, root: str) -> Dict[str, Any]:
    """The step's cached result, or run it (in `<folder>/work`) and record the result."""
    folder = step.folder(root)
    done = read_done(folder)
    if done is not None:
        return done["result"]
    os.makedirs(folder, exist_ok=True)
    atomic_write_json(
        os.path.join(folder, "step.json"),
        {
            "kind": step.kind,
            "label": step.label,
            "settings": step.settings,
            "inputs": step.inputs,
            "code": code_version(),
        },
    )
    with FolderLock(folder, flag=f"step {step.kind}/{step.label}"):
        start = time.time()
        result = step.run(step, os.path.join(folder, "work"))
        atomic_write_json(
            os.path.join(folder, DONE),
            {
                "result": result,
                "seconds": time.time() - start,
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                "code": code_description(),
            },
        )
    return result


class Progress:
    """Step counter with an ETA: each kind's mean measured time, else its time budget."""

    def __init__(self, steps: List[Step], root: str):
        self.steps, self.root = steps, root
        self.seconds: Dict[str, List[float]] = {}
        self.start = time.time()

    def estimate(self, step: Step) -> Optional[float]:
        measured = self.seconds.get(step.kind)
        if measured:
            return sum(measured) / len(measured)
        return None if step.budget_minutes is None else 60 * step.budget_minutes

    def eta(self, remaining: List[Step]) -> str:
        todo = [s for s in remaining if read_done(s.folder(self.root)) is None]
        estimates = [self.estimate(s) for s in todo]
        known = sum(e for e in estimates if e is not None)
        unknown = sum(e is None for e in estimates)
        text = _minutes(known)
        return text + (f" + {unknown} step(s) not yet timed" if unknown else "")

    def record(self, step: Step, seconds: float) -> None:
        self.seconds.setdefault(step.kind, []).append(seconds)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"
