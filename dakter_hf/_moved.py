"""Old import paths (before the subpackages) keep working for one release, with a warning.

`import dakter_hf.train_joint` still works: a finder on `sys.meta_path` answers each old
name with a module that forwards every attribute to the new homes and warns once.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import Dict, Tuple


# old module -> the modules that now hold its names (searched in order)
MOVED: Dict[str, Tuple[str, ...]] = {
    "dakter_hf.arguments": ("dakter_hf.utils.arguments",),
    "dakter_hf.hub": ("dakter_hf.utils.hub",),
    "dakter_hf.devices": ("dakter_hf.utils.devices",),
    "dakter_hf.ownership": ("dakter_hf.utils.ownership", "dakter_hf.errors"),
    "dakter_hf.balance": ("dakter_hf.data.balance",),
    "dakter_hf.fast_data": ("dakter_hf.data.decoded",),
    "dakter_hf.transforms": ("dakter_hf.data.transforms",),
    "dakter_hf.visualize": ("dakter_hf.data.visualize",),
    "dakter_hf.sources_cli": ("dakter_hf.data.options",),
    "dakter_hf.data.sar_image": ("dakter_hf.data.raster",),
    "dakter_hf.data.io": ("dakter_hf.data.save", "dakter_hf.utils.files"),
    "dakter_hf.objective": ("dakter_hf.joint.objective",),
    "dakter_hf.unet": ("dakter_hf.joint.unet",),
    "dakter_hf.speed": ("dakter_hf.joint.speed",),
    "dakter_hf.model_card": ("dakter_hf.joint.card",),
    "dakter_hf.train_joint": (
        "dakter_hf.joint.training",
        "dakter_hf.joint.arguments",
        "dakter_hf.joint.batching",
        "dakter_hf.joint.balance",
        "dakter_hf.joint.checkpoints",
        "dakter_hf.joint.samples",
    ),
    "dakter_hf.generate": (
        "dakter_hf.generation.dataset",
        "dakter_hf.generation.config",
        "dakter_hf.generation.loading",
        "dakter_hf.generation.shards",
        "dakter_hf.generation.card",
        "dakter_hf.generation.hub",
    ),
    "dakter_hf.sampling": ("dakter_hf.generation.schedulers",),
    "dakter_hf.quality": (
        "dakter_hf.evaluation.statistics",
        "dakter_hf.evaluation.report",
        "dakter_hf.evaluation.formatting",
    ),
    "dakter_hf.fid": ("dakter_hf.evaluation.fid",),
    "dakter_hf.tiling": ("dakter_hf.students.tiling",),
}


class _Forwarding(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        for target in MOVED[self.__name__]:
            module = importlib.import_module(target)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(
            f"module {self.__name__!r} (moved to {', '.join(MOVED[self.__name__])}) has no attribute {name!r}"
        )


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return _Forwarding(spec.name)

    def exec_module(self, module):
        new = " / ".join(MOVED[module.__name__])
        warnings.warn(
            f"`{module.__name__}` moved to `{new}`; the old path works for one release only",
            FutureWarning,
            stacklevel=2,
        )
        module.__doc__ = f"Moved to {new} (deprecated path)."


def install() -> None:
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
