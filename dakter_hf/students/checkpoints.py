"""A student run's checkpoints: written whole or not at all, resumed only when complete.

The Trainer saves `checkpoint-N/` into `checkpoint-N.tmp/` (`DAKTerTrainer._save_checkpoint`)
and renames it into place once every file is written, so a kill during a save leaves only
`checkpoint-N.tmp`, which the next claim of the folder removes. A `checkpoint-N/` that is
still incomplete (an older version of this package wrote in place, or a file was damaged)
is skipped with a warning when resuming, and never counted by the rotation
(`save_total_limit`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from typing import Iterable, List, Optional

from dakter_hf.errors import FolderError


logger = logging.getLogger(__name__)

STAGING_SUFFIX = ".tmp"  # checkpoint-N.tmp/checkpoint-N while it is being written
LEFTOVERS = {f"checkpoint-*{STAGING_SUFFIX}": "half-saved checkpoint", "*.tmp": "half-written file"}
_NAME = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
LATEST = ("latest", "true", "True")  # --resume_from_checkpoint values that mean "the newest complete checkpoint"


def checkpoint_step(path: str) -> Optional[int]:
    """N of a `checkpoint-N` folder, or None for any other name (a staging folder included)."""
    match = _NAME.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else None


def checkpoint_problem(path: str, full: bool = True) -> Optional[str]:
    """Why `path` cannot be resumed from (None when it is a complete checkpoint).

    The Trainer writes the trainer state after the weights, optimizer, scheduler and RNG
    states, so a readable state of the same step, a config, readable weights and (`full`, all but
    `--save_only_model` runs) the optimizer and scheduler files make it complete.
    """
    if not os.path.isdir(path):
        return "no such folder"
    for name in ("optimizer.pt", "scheduler.pt") if full else ():
        if not os.path.isfile(os.path.join(path, name)):
            return f"no {name}"
    state_path = os.path.join(path, "trainer_state.json")
    try:
        with open(state_path, encoding="utf-8") as handle:
            state = json.load(handle)
        with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
            json.load(handle)
    except FileNotFoundError as missing:
        return f"no {os.path.basename(missing.filename)}"
    except (OSError, ValueError):
        return "a half-written trainer_state.json or config.json"
    step = checkpoint_step(path)
    if step is not None and state.get("global_step") != step:
        return f"its trainer state is of step {state.get('global_step')}"
    weights = [name for name in _WEIGHTS if os.path.isfile(os.path.join(path, name))]
    if not weights:
        return "no model weights"
    if weights[0] == "model.safetensors" and not _safetensors_readable(os.path.join(path, weights[0])):
        return "half-written model.safetensors"
    return None


def _safetensors_readable(path: str) -> bool:
    """The header parses and the file is as long as the header says (a cut file is shorter)."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        return os.path.getsize(path) >= 8 + size + end
    except (OSError, ValueError, KeyError, TypeError):
        return False


def complete_checkpoints(output_dir: str, warn: bool = True, full: bool = True) -> List[str]:
    """The complete `checkpoint-N` folders of `output_dir`, oldest first; incomplete ones are left out (warned)."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in sorted(os.listdir(output_dir), key=lambda n: checkpoint_step(n) or -1):
        path = os.path.join(output_dir, name)
        if checkpoint_step(name) is None or not os.path.isdir(path):
            continue
        problem = checkpoint_problem(path, full)
        if problem is None:
            found.append(path)
        elif warn:
            logger.warning("skipping the incomplete checkpoint %s (%s)", path, problem)
    return found


def resume_checkpoint(output_dir: str, requested, full: bool = True) -> Optional[str]:
    """The checkpoint a run resumes from: `requested` is None, "latest" (the newest complete one) or a path.

    A named checkpoint that is incomplete is refused (with the newest complete one named), not replaced.
    """
    if not requested:
        return None
    if requested is True or requested in LATEST:
        found = complete_checkpoints(output_dir, full=full)
        if not found:
            logger.info("no complete checkpoint in %s: starting a new run", output_dir)
            return None
        return found[-1]
    problem = checkpoint_problem(requested, full)
    if problem == "no such folder":
        raise FileNotFoundError(f"--resume_from_checkpoint {requested}: no such checkpoint folder")
    if problem is not None:
        found = complete_checkpoints(os.path.dirname(os.path.normpath(requested)) or ".", warn=False, full=full)
        hint = f"; the newest complete one is {found[-1]}" if found else ""
        raise FolderError(f"--resume_from_checkpoint {requested} is incomplete ({problem}){hint}")
    return requested


def rotate_checkpoints(
    output_dir: str, limit: Optional[int], keep: Iterable[Optional[str]] = (), full: bool = True
) -> List[str]:
    """Delete the oldest complete checkpoints beyond `limit` (never one in `keep`), and incomplete ones older
    than the newest complete one (a rotation cut short); returns what went."""
    if limit is None or limit <= 0:
        return []
    checkpoints = complete_checkpoints(output_dir, warn=False, full=full)
    kept = {os.path.realpath(path) for path in keep if path}
    removable = [path for path in checkpoints[:-1] if os.path.realpath(path) not in kept]
    removed = removable[: max(0, len(checkpoints) - limit)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed + remove_superseded(output_dir, full)


def remove_superseded(output_dir: str, full: bool = True) -> List[str]:
    """Delete the incomplete checkpoints older than the newest complete one (a rotation cut short): no
    resume can use them. Newer incomplete ones stay (skipped with a warning) until saved again."""
    checkpoints = complete_checkpoints(output_dir, warn=False, full=full)
    if not checkpoints:
        return []
    newest = checkpoint_step(checkpoints[-1])
    removed = [
        os.path.join(output_dir, name)
        for name in sorted(os.listdir(output_dir))
        if (checkpoint_step(name) or newest) < newest and os.path.join(output_dir, name) not in checkpoints
    ]
    for path in removed:
        logger.info("removing %s: incomplete, and older than the newest complete checkpoint", path)
        shutil.rmtree(path, ignore_errors=True)
    return removed
