"""A folder knows what wrote it: the ownership marker, input protection, locks and leftovers.

Every command that writes a folder (`dakter data`, `dakter generate`, `dakter demo`,
`train_joint.py`, `train_student.py`) claims it first:

    claim = claim_folder(out, kind="generate", settings={...}, inputs={"pipeline": fingerprint},
                         input_paths=[pipeline_dir], overwrite=args.overwrite)

* an absent or empty folder is created and gets `.dakter.json` (kind, settings hash, inputs);
* a folder with the same kind, settings and inputs is continued (`claim.resumed`);
* anything else is refused with a message saying what is there and what to pass;
* `overwrite=True` empties the folder first, but never one that is, holds or lies inside an
  input of the command;
* a second writer is refused while the first one's lock (`.dakter.lock`, its PID) is held.

Call `claim_folder` only after every argument has been checked: a refused command writes nothing.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

from dakter_hf.errors import FolderError
from dakter_hf.utils.files import atomic_write_json, read_json


MARKER = ".dakter.json"
LOCK = ".dakter.lock"


def settings_hash(settings: dict, inputs: Optional[dict] = None) -> str:
    payload = json.dumps({"settings": settings, "inputs": inputs or {}}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def file_fingerprint(paths: Iterable[str]) -> str:
    """sha256 over the bytes of the given files (e.g. model weights), in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(os.path.basename(path).encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def folder_fingerprint(folder: str, suffixes=(".safetensors", ".bin", ".json")) -> str:
    """Fingerprint of a model folder: every weight and config file below it."""
    found = [
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.endswith(suffixes) and name not in (MARKER, LOCK)
    ]
    return file_fingerprint(found)


def dataset_fingerprint(dataset) -> str:
    """Content fingerprint that is the same on every load: row count plus the ids (or seeds) of the rows."""
    column = "id" if "id" in dataset.column_names else "seed" if "seed" in dataset.column_names else None
    values = dataset[column] if column else []
    return hashlib.sha256(json.dumps([len(dataset), column, values], default=str).encode()).hexdigest()[:16]


def read_marker(folder: str) -> Optional[dict]:
    """The folder's ownership marker, or None when it has none."""
    return read_json(os.path.join(folder, MARKER))


def is_within(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_not_an_input(out: str, input_paths: Iterable[Optional[str]], flag: str = "--out") -> None:
    """Refuse an output folder that is, holds or lies inside one of the command's inputs."""
    for path in input_paths:
        if not path or not os.path.exists(path):
            continue
        if is_within(path, out) or is_within(out, path):
            raise FolderError(
                f"{flag} {out} overlaps the input {path}; writing or deleting it could destroy the input. Choose an "
                "output folder outside the inputs"
            )


@dataclass
class Claim:
    folder: str
    kind: str
    resumed: bool
    record: dict = field(default_factory=dict)

    def update(self, **values) -> None:
        """Record progress (e.g. finished=True) in the marker."""
        self.record.update(values)
        atomic_write_json(os.path.join(self.folder, MARKER), self.record)


def claim_folder(
    folder: str,
    kind: str,
    settings: dict,
    inputs: Optional[dict] = None,
    input_paths: Iterable[Optional[str]] = (),
    overwrite: bool = False,
    allow_resume: bool = True,
    flag: str = "--out",
    resume_hint: str = "",
    write: bool = True,
) -> Claim:
    """Claim `folder` for this command (see the module docstring). `write=False` only checks."""
    folder = os.path.abspath(folder)
    check_not_an_input(folder, input_paths, flag)
    digest = settings_hash(settings, inputs)
    record = {"kind": kind, "settings_hash": digest, "settings": settings, "inputs": inputs or {}}
    if overwrite and os.path.isdir(folder) and os.listdir(folder):
        if write:
            remove_folder_contents(folder)
    existing = read_marker(folder) if os.path.isdir(folder) else None
    if existing is not None:
        if existing.get("kind") != kind:
            raise FolderError(
                f"{flag} {folder} was written by `{existing.get('kind')}`, not `{kind}`; choose another folder (or "
                "--overwrite to replace it)"
            )
        if existing.get("settings_hash") != digest:
            raise FolderError(
                f"{flag} {folder} holds a {kind} run with other settings or inputs "
                f"({_differences(existing, record)}); use another folder or --overwrite"
            )
        if not allow_resume:
            raise FolderError(
                f"{flag} {folder} already holds this {kind} run; {resume_hint or 'pass --overwrite to start again'}"
            )
        return Claim(folder, kind, True, existing)
    if os.path.isdir(folder) and _visible_entries(folder):
        raise FolderError(
            f"{flag} {folder} is not empty and was not written by `{kind}` "
            f"({', '.join(sorted(_visible_entries(folder))[:5])}); choose another folder or --overwrite"
        )
    if write:
        os.makedirs(folder, exist_ok=True)
        atomic_write_json(os.path.join(folder, MARKER), record)
    return Claim(folder, kind, False, record)


def _visible_entries(folder: str) -> List[str]:
    return [name for name in os.listdir(folder) if name not in (LOCK,)]


def _differences(there: dict, here: dict) -> str:
    a, b = there.get("settings", {}), here.get("settings", {})
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    parts = [f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in keys[:6]]
    if there.get("inputs") != here.get("inputs"):
        parts.append("inputs differ")
    return "; ".join(parts) or "settings hash differs"


def remove_folder_contents(folder: str) -> None:
    """Empty `folder` (the caller has checked it holds no input); a writer's lock stays."""
    for name in os.listdir(folder):
        if name == LOCK:
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


# ------------------------------------------------------------------------------- locks
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM
    return True


class FolderLock:
    """One writer per folder: `.dakter.lock` holds the writer's PID; a stale lock is taken over."""

    def __init__(self, folder: str, flag: str = "--out", path: Optional[str] = None):
        """`path`: where the lock file goes (default: inside `folder`; beside it for a folder replaced whole)."""
        self.path = path or os.path.join(os.path.abspath(folder), LOCK)
        self.flag, self.folder = flag, folder
        self.held = False

    def ensure_free(self) -> None:
        """Refuse now if another live process holds the lock (without taking it)."""
        holder = self._holder() if os.path.isfile(self.path) else None
        if holder is not None and holder != os.getpid() and _pid_alive(holder):
            raise FolderError(
                f"{self.flag} {self.folder} is being written by another process (PID {holder}); wait for it or choose "
                "another folder"
            )

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and holder != os.getpid() and _pid_alive(holder):
                    raise FolderError(
                        f"{self.flag} {self.folder} is being written by another process (PID {holder}); wait for it "
                        "or choose another folder"
                    ) from None
                try:
                    os.remove(self.path)  # stale: its writer is gone
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(handle, "w") as stream:
                stream.write(str(os.getpid()))
            self.held = True
            return self
        raise FolderError(f"{self.flag} {self.folder}: could not take the lock {self.path}")

    def _holder(self) -> Optional[int]:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return int(handle.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc):
        if self.held:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self.held = False
        return False


# --------------------------------------------------------------------------- leftovers
def remove_leftovers(folder: str, patterns: Dict[str, str]) -> List[str]:
    """Remove what an interrupted run left: entries of `folder` whose name matches a glob in `patterns`.

    `patterns` maps a glob to a description (for the log), e.g. {"*.tmp": "half-written shard"}.
    """

    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        if any(fnmatch.fnmatch(name, pattern) for pattern in patterns):
            path = os.path.join(folder, name)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
            removed.append(path)
    return removed


def agree_on_refusal(error: Optional[BaseException], num_processes: int, broadcast) -> None:
    """Under `accelerate launch` only the main process claims a folder: it shares its refusal, so
    every process stops with the same one-line error instead of waiting at a barrier."""
    message = str(error) if error is not None else None
    if num_processes > 1:
        message = broadcast([message])[0]
    if message is not None:
        raise FolderError(message)
