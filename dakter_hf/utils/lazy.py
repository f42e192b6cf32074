"""Lazy package exports: `import dakter_hf` (and the `dakter` command line) stay fast.

A package lists {public name: module}; the module loads on the first attribute access.
"""

from __future__ import annotations

from importlib import import_module
from typing import Callable, Dict


def lazy_exports(package: str, exports: Dict[str, str]) -> Callable[[str], object]:
    """A module-level `__getattr__` for `package` that imports `exports[name]` on first use."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
