"""One way to name a dataset everywhere (CLI, training, generation).

sos:ROOT         SOS official layout (choose --sensor)
osd:ROOT         OSD layout (RGB masks, cropped to patches)
folder:ROOT      images/ + masks/ folders (give the class names)
simulate:N[,M]   N synthetic SAR scenes, plus M test scenes (offline tests and demos)
DIR              a DatasetDict written by `dakter data` / save_to_disk
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import datasets

from dakter_hf.data.features import class_names_of
from dakter_hf.errors import DataError


SOURCE_KINDS = ("sos", "osd", "folder", "simulate")


def load_source(
    spec: str,
    sensor: str = "palsar",
    split: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
    num_classes: int = 2,
    size: int = 64,
    seed: int = 0,
    normalization=None,
) -> datasets.DatasetDict:
    """Load the dataset a spec string names, as a DatasetDict.

    `normalization` (a `sar_image.Normalization`) maps images of any depth to grey uint8
    for folder:ROOT; SOS and OSD ship 8-bit JPEGs and are read as stored.
    """
    kind, _, rest = spec.partition(":")
    if kind in SOURCE_KINDS and rest:
        if kind == "sos":
            from dakter_hf.data.sos import load_sos

            return load_sos(rest, sensor=sensor, split=split)
        if kind == "osd":
            from dakter_hf.data.osd import load_osd

            return load_osd(rest, split=split, seed=seed)
        if kind == "folder":
            from dakter_hf.data.folder import load_folder

            if not class_names:
                raise ValueError("folder:ROOT needs the class names (e.g. --classes background,oil)")
            return load_folder(rest, class_names, split=split, normalization=normalization)
        from dakter_hf.data.simulate import simulate_sar

        counts = rest.split(",")
        try:
            if len(counts) > 2:
                raise ValueError
            count, test_count = int(counts[0]), int(counts[1]) if len(counts) == 2 else 0
        except ValueError:
            raise ValueError(f"simulate:N[,M] needs N training (and M test) samples, got {spec!r}") from None
        if count <= 0 or test_count < 0:
            raise ValueError(f"simulate:N[,M] needs N > 0 and M >= 0, got {spec!r}")
        data = simulate_sar(count, num_classes=num_classes, size=size, seed=seed, num_test_samples=test_count)
        return _select(data, split, spec)
    return load_saved(spec, split)


def load_saved(path: str, split: Optional[str] = None) -> datasets.DatasetDict:
    """A DatasetDict saved with `save_to_disk` (the `dakter data --out` folder or its `hf/` part)."""
    if not os.path.isdir(path):
        raise DataError(
            f"{path}: not a dataset folder and not a source spec; expected a folder written by "
            f"`dakter data`, or one of {', '.join(k + ':...' for k in SOURCE_KINDS)}"
        )
    candidate = os.path.join(path, "hf") if os.path.isdir(os.path.join(path, "hf")) else path
    if os.path.isfile(os.path.join(candidate, "dataset_dict.json")) or os.path.isfile(
        os.path.join(candidate, "dataset_info.json")
    ):
        data = datasets.load_from_disk(candidate)
    elif os.path.isdir(os.path.join(path, "data")) and any(
        n.endswith(".parquet") for n in os.listdir(os.path.join(path, "data"))
    ):
        data = datasets.load_dataset("parquet", data_dir=os.path.join(path, "data"))
    else:
        raise DataError(
            f"{path}: no saved dataset here; expected hf/dataset_dict.json (save_to_disk) or data/*.parquet"
        )
    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict({"train": data})
    class_names_of(data)  # fails clearly if the class names are missing
    return _select(data, split, path)


def _select(data: datasets.DatasetDict, split: Optional[str], name: str) -> datasets.DatasetDict:
    if split is None:
        return data
    if split not in data:
        raise DataError(f"{name}: has no split {split!r}; splits: {list(data)}")
    return datasets.DatasetDict({split: data[split]})


def source_path(spec: str) -> Optional[str]:
    """The folder a source spec reads from (None for simulate:N), for input-protection checks."""
    kind, _, rest = spec.partition(":")
    if kind in SOURCE_KINDS and rest:
        return None if kind == "simulate" else rest
    return spec
