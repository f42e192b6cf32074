"""The body of `dakter data`: load a source and write it as an owned Hugging Face dataset folder.

The experiment runner calls `export_dataset` directly; the command line only parses into
`ExportSettings` and prints what comes back.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from dakter_hf.data.arrays import mask_to_ids
from dakter_hf.data.build import building_cache
from dakter_hf.data.features import class_names_of
from dakter_hf.data.raster import NODATA_POLICY, Normalization
from dakter_hf.data.save import save_dataset
from dakter_hf.data.sources import load_source, source_path
from dakter_hf.errors import FolderError
from dakter_hf.utils.ownership import (
    MARKER,
    FolderLock,
    check_output_path,
    read_marker,
    remove_leftovers,
    settings_hash,
)


DATA_CARD = """# {name}

A segmentation dataset written by `dakter data` from `{source}`{sensor}.

{summary}

Images: grey uint8. Normalisation of the source pixels: {normalization}.
No-data pixels: {nodata}.
Load: `datasets.load_from_disk("hf")` or `datasets.load_dataset("parquet", data_dir="data")`.
"""


@dataclass
class ExportSettings:
    """What `dakter data` writes: the source spec, its options and the output folder."""

    source: str
    out: str
    sensor: str = "palsar"
    split: Optional[str] = None
    classes: Optional[str] = None  # comma-separated names, as on the command line (folder:ROOT)
    num_classes: int = 2
    size: int = 64
    seed: int = 0
    normalization: Normalization = field(default_factory=Normalization)
    overwrite: bool = False

    def recorded(self) -> Dict[str, object]:
        """The settings the folder's marker records (what makes two exports the same)."""
        return {
            "source": self.source,
            "sensor": self.sensor,
            "split": self.split,
            "classes": self.classes,
            "num_classes": self.num_classes,
            "size": self.size,
            "seed": self.seed,
            "normalization": self.normalization.to_dict(),
            "nodata": NODATA_POLICY,  # how the loaders treat no-data pixels (data.raster.read_sar_grey)
        }


@dataclass
class ExportResult:
    out: str
    data: Optional[object]  # the DatasetDict written, None when the folder already held it
    summary: str = ""
    paths: Dict[str, str] = field(default_factory=dict)

    @property
    def unchanged(self) -> bool:
        return self.data is None


def class_list(classes: Optional[str]) -> Optional[List[str]]:
    """`--classes a,b` as a list of names."""
    return [c.strip() for c in classes.split(",")] if classes else None


def summarize(data) -> str:
    """Splits, counts, image size, classes and their pixel shares."""
    names = class_names_of(data)
    lines = [f"classes ({len(names)}): " + ", ".join(f"{i}={n}" for i, n in enumerate(names))]
    for split, dataset in data.items():
        counts = np.zeros(len(names), dtype=np.int64)
        sizes = set()
        for mask in dataset["mask"]:
            ids = mask_to_ids(mask)
            sizes.add(f"{ids.shape[1]}x{ids.shape[0]}")
            counts += np.bincount(ids.ravel(), minlength=len(names))[: len(names)]
        shares = ", ".join(f"{n} {100 * c / max(counts.sum(), 1):.1f}%" for n, c in zip(names, counts))
        lines.append(f"{split}: {len(dataset)} images, size {', '.join(sorted(sizes))}; pixels: {shares}")
    return "\n".join(lines)


def _restore_interrupted_replace(out: str) -> None:
    """A run killed between the two renames of `replace_folder` leaves the old copy as NAME.old-*: put it back."""
    olds = glob.glob(glob.escape(out) + ".old-*")
    if not os.path.exists(out) and len(olds) == 1 and os.path.isdir(olds[0]):
        os.replace(olds[0], out)


def export_dataset(settings: ExportSettings) -> ExportResult:
    """Write `settings.source` to `settings.out` (save_to_disk + parquet), owned by `dakter data`."""
    out = os.path.abspath(settings.out)
    recorded = settings.recorded()
    check_output_path(out, [source_path(settings.source)], flag="--out")  # the command checks its owner too
    parent, name = os.path.dirname(out), os.path.basename(out)
    os.makedirs(parent, exist_ok=True)
    # the folder is replaced whole, so its lock lies beside it
    with FolderLock(out, path=os.path.join(parent, f".{name}.dakter.lock")):
        _restore_interrupted_replace(out)
        existing = read_marker(out) if os.path.isdir(out) else None
        if os.path.exists(out) and (existing or {}).get("kind") != "data" and os.listdir(out):
            there = "is not empty, not written by `dakter data`"
            if existing:
                there = f"was written by `{existing.get('kind')}`"
            raise FolderError(
                f"--out {out} {there}; choose another --out (--overwrite only replaces what `dakter data` wrote)"
            )
        remove_leftovers(parent, {name + ".tmp-*": "staging", name + ".old-*": "replaced copy"})
        cache = tempfile.mkdtemp(prefix=name + ".tmp-", dir=parent)  # no second copy in ~/.cache
        try:
            with building_cache(cache):
                data = load_source(
                    settings.source,
                    sensor=settings.sensor,
                    split=settings.split,
                    class_names=class_list(settings.classes),
                    num_classes=settings.num_classes,
                    size=settings.size,
                    seed=settings.seed,
                    normalization=settings.normalization,
                )
            # the loaders' fingerprints change with the input files (paths, sizes, times)
            inputs = {
                "source": settings.source,
                "splits": {split: dataset._fingerprint for split, dataset in data.items()},
            }
            record = {
                "kind": "data",
                "settings_hash": settings_hash(recorded, inputs),
                "settings": recorded,
                "inputs": inputs,
            }
            if existing is not None and not settings.overwrite:
                if existing.get("settings_hash") == record["settings_hash"]:
                    return ExportResult(out=out, data=None)
                raise FolderError(
                    f"--out {out} is a `{existing.get('kind')}` folder with other settings or input files; choose "
                    "another --out, or --overwrite to replace it"
                )
            text = summarize(data)
            sensor = f" (sensor {settings.sensor})" if settings.source.startswith("sos:") else ""
            card = DATA_CARD.format(
                name=name,
                source=settings.source,
                sensor=sensor,
                summary=text,
                normalization=settings.normalization.describe(),
                nodata=NODATA_POLICY,
            )
            paths = save_dataset(
                data,
                out,
                overwrite=settings.overwrite,
                extra_files={MARKER: json.dumps(record, indent=2) + "\n", "README.md": card},
            )
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return ExportResult(out=out, data=data, summary=text, paths=paths)
