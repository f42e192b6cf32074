"""Files that readers never see half-written: atomic writes, whole-folder replacement, JSON records.

Every file the package writes goes to a unique temporary name beside its target
(`.NAME.<random>.tmp`, so readers that glob `*.parquet` or `*.png` never see it and two writers never
share one) and is renamed over the target only once complete; on an error the temporary is removed
and the old file stays. `atomic_write` gives an open handle; `atomic_path` gives the temporary path,
for writers that want a path (`image.save`, `np.save`, `tifffile.imwrite`, `to_parquet`, a zip file).
An interrupted process can still leave a temporary behind: `ownership.remove_leftovers(folder,
{"*.tmp": ...})` removes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from typing import IO, Any, Iterator, Optional, Tuple


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


def _new_temporary(path: str, suffix: str) -> Tuple[int, str]:
    """Create a unique, empty `.NAME.<random><suffix>` beside `path`: (open descriptor, its path).

    Like `tempfile.mkstemp`, but with the permissions `open` would give (0o666 less the umask), not 0o600.
    """
    folder, name = os.path.split(os.path.abspath(path))
    flags = os.O_CREAT | os.O_EXCL | os.O_RDWR | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a unique temporary path beside `path` (the file exists, empty); write it in the block.

    On success the temporary replaces `path`; on an error it is removed and `path` is left as it was.
    `suffix` ends the temporary's name, for writers that choose a format by extension (".tmp.png").
    """
    handle, temporary = _new_temporary(path, suffix)
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        _remove(temporary)
        raise


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: Optional[str] = None, suffix: str = ".tmp") -> Iterator[IO]:
    """`open(path, mode)` through a unique temporary name (see `atomic_path`); text defaults to UTF-8."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes a whole file: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path, suffix) as temporary:
        with open(temporary, mode, encoding=encoding) as handle:
            yield handle


def atomic_write_text(path: str, text: str) -> str:
    """Write `text` (UTF-8) to `path` so readers never see half a file."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def atomic_write_json(path: str, payload) -> str:
    return atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def read_json(path: str) -> Optional[Any]:
    """The JSON record at `path`, or None when there is no such file (a record not yet written)."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
