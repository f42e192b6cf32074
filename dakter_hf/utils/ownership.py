"""A folder knows what wrote it: the ownership marker, input protection, locks and leftovers.

Every command that writes a folder (`dakter data`, `dakter generate`, `dakter demo`,
`train_joint.py`, `train_student.py`) claims it first:

    claim = claim_folder(out, kind="generate", settings={...}, inputs={"pipeline": fingerprint},
                         input_paths=[pipeline_dir], overwrite=args.overwrite)

* an absent or empty folder is created and gets `.dakter.json` (kind, settings hash, inputs);
* a folder with the same kind, settings and inputs is continued (`claim.resumed`);
* anything else is refused with a message saying what is there and what to pass;
* `overwrite=True` empties the folder first, but only one this command wrote (its marker's kind),
  and never one that is, holds or lies inside an input of the command;
* a second writer is refused while the first one's lock (`.dakter.lock`, its PID) is held.

Call `claim_folder` only after every argument has been checked: a refused command writes nothing.

`check_output_path(path, inputs, kind=..., flag=...)` is the one rule for every path a command
writes (`--out`, `--output_dir`, `--json`, a report folder): not an input, not inside or around
one (symlinks resolved), not inside a folder another command owns, and `--overwrite` replaces only
what the same command wrote. Every command calls it on each output before any work starts.
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


COMMAND_NAMES = {
    "data": "dakter data",
    "generate": "dakter generate",
    "quality": "dakter quality",
    "evaluate": "dakter evaluate",
    "segment": "dakter segment",
    "experiment": "dakter experiment",
    "experiment-report": "dakter experiment (its report)",
    "demo": "dakter demo",
    "train-joint": "train_joint.py",
    "train-student": "train_student.py",
}


def command_name(kind: Optional[str]) -> str:
    """The command a marker's kind stands for, as the user types it: `dakter experiment`, `train_joint.py`."""
    return f"`{COMMAND_NAMES.get(kind, kind)}`"


def owner_of(path: str) -> Optional[tuple]:
    """(folder, marker) of the nearest folder at or above `path` that holds a `.dakter.json`, else None."""
    folder = os.path.realpath(path)
    if not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    while True:
        marker = read_marker(folder) if os.path.isfile(os.path.join(folder, MARKER)) else None
        if marker is not None:
            return folder, marker
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def check_output_path(
    path: Optional[str],
    inputs: Iterable[Optional[str]] = (),
    *,
    kind: Optional[str] = None,
    flag: str = "--out",
    overwrite: bool = False,
    within: Iterable[str] = (),
    allowed: Iterable[str] = (),
    file: bool = False,
) -> Optional[str]:
    """The one rule for every path a command writes (a folder or a file); call it before any work starts.

    * the path may not be, lie inside or hold any of `inputs` (symlinks resolved);
    * it may not lie inside a folder that another command owns (a `.dakter.json` there or in a
      parent), unless its kind is `kind` or one of `within` (e.g. a report folder inside the
      experiment that writes it);
    * `overwrite` only ever replaces what `kind` wrote: a non-empty folder without this command's
      marker is refused.

    `allowed`: exact paths the command documents as its own even inside an input (e.g. `dakter
    quality`'s GENERATED/quality.json). `file`: the path names a file (`--json`), not a folder.
    A path that cannot be written (a file where a folder is needed, no permission) is refused too.
    Raises FolderError (one line, naming `flag`); returns the absolute path.
    """
    if not path:
        return None
    real = os.path.realpath(path)
    _check_writable(path, real, flag, file)
    if real in {os.path.realpath(p) for p in allowed if p}:
        return os.path.abspath(path)
    for item in inputs:
        if not item or not os.path.lexists(item):
            continue
        source = os.path.realpath(item)
        if is_within(real, source) or is_within(source, real):
            where = "is" if real == source else "lies inside" if is_within(real, source) else "holds"
            raise FolderError(
                f"{flag} {path} overlaps the input {item} (it {where} it); writing there could destroy the input. "
                "Choose a path outside the inputs"
            )
    if kind is not None:
        command = command_name(kind)
        owner = owner_of(real)
        if owner is not None and owner[1].get("kind") not in (kind, *within):
            folder, other = owner[0], owner[1].get("kind")
            who = command_name(other)
            if folder == real:
                raise FolderError(
                    f"{flag} {path} was written by `{other}` ({who}), not {command}; --overwrite only replaces what "
                    f"{command} wrote. Choose another path"
                )
            raise FolderError(
                f"{flag} {path} lies inside {folder}, a folder owned by {who}; only {who} writes there. "
                "Choose a path outside it"
            )
        if overwrite and os.path.isdir(real) and _visible_entries(real) and (owner is None or owner[0] != real):
            raise FolderError(
                f"{flag} {path} is not empty and was not written by {command}; --overwrite only replaces what "
                f"{command} wrote. Choose another folder"
            )
    return os.path.abspath(path)


def _check_writable(path: str, real: str, flag: str, file: bool) -> None:
    if file and os.path.isdir(real):
        raise FolderError(f"{flag} {path} is a folder; give the path of a file to write")
    if not file and os.path.exists(real) and not os.path.isdir(real):
        raise FolderError(f"{flag} {path} is a file; give a folder")
    above = real if os.path.isdir(real) else os.path.dirname(real)
    while not os.path.exists(above):
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        raise FolderError(f"{flag} {path}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise FolderError(f"{flag} {path}: no permission to write in {above}")


def check_not_an_input(out: str, input_paths: Iterable[Optional[str]], flag: str = "--out") -> None:
    """Refuse an output folder that is, holds or lies inside one of the command's inputs (`check_output_path`)."""
    check_output_path(out, input_paths, flag=flag)


# what a marker's kind says a folder is, for messages that tell the user what they passed
KIND_NAMES = {
    "data": "a `dakter data` folder (real data)",
    "generate": "a `dakter generate` folder (generated data)",
    "train-joint": "a joint model's folder (`train_joint.py`)",
    "train-student": "a student's folder (`train_student.py`)",
    "experiment": "a `dakter experiment` folder",
    "experiment-report": "a `dakter experiment` report folder",
    "demo": "a `dakter demo` folder",
    "segment": "a `dakter segment` output folder",
}
GENERATED_CARD_TITLE = "# Generated SAR oil-spill images with soft labels (DAKTer)"


def describe_folder(folder: str) -> str:
    """What `folder` is, from its marker (or its dataset card): e.g. "a `dakter data` folder (real data)"."""
    marker = read_marker(folder) if os.path.isfile(os.path.join(folder, MARKER)) else None
    if marker is not None:
        kind = marker.get("kind")
        return KIND_NAMES.get(kind, f"a folder written by `{kind}`")
    if is_generated_card(os.path.join(folder, "README.md")):
        return KIND_NAMES["generate"]
    return "a folder not written by `dakter generate` (no .dakter.json of kind generate, no generated-dataset card)"


def is_generated_card(path: str) -> bool:
    """A dataset card written by `dakter generate` (its title, tagged dakter + synthetic)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(1 << 16)
    except OSError:
        return False
    return GENERATED_CARD_TITLE in text and "- dakter" in text and "- synthetic" in text


def check_generated(spec: str, flag: str = "--generated") -> None:
    """Generated means generated: a local `spec` must be a folder written by `dakter generate`, known by its
    marker (kind generate) or, for a copy without one (e.g. a downloaded Hub snapshot), by its card."""
    if not os.path.isdir(spec):
        return  # a Hub id (checked by its card when it loads) or a missing folder (the loader says so)
    marker = read_marker(spec) if os.path.isfile(os.path.join(spec, MARKER)) else None
    if (marker or {}).get("kind") == "generate" or (
        marker is None and is_generated_card(os.path.join(spec, "README.md"))
    ):
        return
    raise FolderError(
        f"{flag} {spec} is {describe_folder(spec)}, not a generated set; {flag} takes only a folder or Hub dataset "
        "written by `dakter generate` (real data goes to --real)"
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
    existing = read_marker(folder) if os.path.isdir(folder) else None
    if overwrite and os.path.isdir(folder) and _visible_entries(folder):
        if (existing or {}).get("kind") != kind:  # --overwrite only replaces what this command wrote
            there = f"was written by `{existing.get('kind')}`" if existing else "was not written by a dakter command"
            raise FolderError(
                f"{flag} {folder} {there}; --overwrite only replaces what `{kind}` wrote. Choose another folder"
            )
        if write:
            remove_folder_contents(folder)
            atomic_write_json(os.path.join(folder, MARKER), record)
        return Claim(folder, kind, False, record)
    if existing is not None:
        if existing.get("kind") != kind:
            raise FolderError(
                f"{flag} {folder} was written by `{existing.get('kind')}`, not `{kind}`; choose another folder "
                f"(--overwrite only replaces what `{kind}` wrote)"
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
            f"({', '.join(sorted(_visible_entries(folder))[:5])}); choose another folder (--overwrite only replaces "
            f"what `{kind}` wrote)"
        )
    if write:
        os.makedirs(folder, exist_ok=True)
        atomic_write_json(os.path.join(folder, MARKER), record)
    return Claim(folder, kind, False, record)


def _visible_entries(folder: str) -> List[str]:
    """What a folder holds besides a lock and a half-written marker (a command killed while claiming it)."""
    return [name for name in os.listdir(folder) if name != LOCK and not fnmatch.fnmatch(name, f".{MARKER}.*.tmp")]


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
