"""Files that readers never see half-written: atomic text/JSON writes and whole-folder replacement."""

from __future__ import annotations

import json
import os
import shutil
import tempfile


def replace_folder(new: str, target: str) -> None:
    """Move `new` to `target`, replacing an existing target only once `new` is complete."""
    if os.path.exists(target):
        backup = tempfile.mkdtemp(prefix=os.path.basename(target) + ".old-", dir=os.path.dirname(target))
        os.rmdir(backup)
        os.replace(target, backup)
        os.replace(new, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(new, target)


def atomic_write_text(path: str, text: str) -> str:
    """Write `text` to `path` through a temporary name, so readers never see half a file."""
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)
    return path


def atomic_write_json(path: str, payload) -> str:
    return atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")
