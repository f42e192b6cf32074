"""SOS (Deep-SAR Oil Spill, Zhu et al. 2022) in its official folder layout.

    ROOT/train/{palsar,sentinel}/{id}_sat.jpg + {id}_mask.png
    ROOT/test/{palsar,sentinel}/sat/{id}_sat.jpg + gt/{id}_mask.png

Images are read as one grey channel; mask pixels > 127 are oil (class 1).
"""

from __future__ import annotations

import glob
import os
from typing import Optional, Sequence

import datasets
import numpy as np

from dakter_hf.data.build import build_split, check_pair, file_signature, require_dir
from dakter_hf.data.features import SOS_CLASSES
from dakter_hf.data.raster import read_sar_grey
from dakter_hf.errors import DataError


SOS_SENSORS = ("palsar", "sentinel")
SOS_SPLITS = ("train", "test")


def _sos_pairs(root: str, sensor: str, split: str):
    if split == "train":
        image_dir = mask_dir = require_dir(os.path.join(root, "train", sensor), f"SOS {split}/{sensor}")
    else:
        base = require_dir(os.path.join(root, "test", sensor), f"SOS {split}/{sensor}")
        image_dir = require_dir(os.path.join(base, "sat"), f"SOS {split}/{sensor} images (sat/)")
        mask_dir = require_dir(os.path.join(base, "gt"), f"SOS {split}/{sensor} masks (gt/)")
    pairs = []
    for image_path in sorted(glob.glob(os.path.join(image_dir, "*_sat.jpg"))):
        sample_id = os.path.basename(image_path)[: -len("_sat.jpg")]
        mask_path = os.path.join(mask_dir, f"{sample_id}_mask.png")
        if not os.path.isfile(mask_path):
            raise DataError(f"{image_path}: no mask for this image; expected {mask_path}")
        pairs.append((sample_id, image_path, mask_path))
    if not pairs:
        raise DataError(f"{image_dir}: empty dataset, expected files named {{id}}_sat.jpg")
    return pairs


def load_sos(root: str, sensor: str = "palsar", split: Optional[str] = None) -> datasets.DatasetDict:
    """Load SOS as a DatasetDict (features: image, mask, id, source, classes).

    Args:
        root: folder holding `train/` and/or `test/` in the official layout.
        sensor: `palsar` (ALOS PALSAR) or `sentinel` (Sentinel-1A).
        split: `train`, `test`, or None for every split present under root.
    """
    if sensor not in SOS_SENSORS:
        raise ValueError(f"sensor must be one of {SOS_SENSORS}, got {sensor!r}")
    require_dir(root, "SOS root")
    if split is None:
        splits: Sequence[str] = [s for s in SOS_SPLITS if os.path.isdir(os.path.join(root, s, sensor))]
        if not splits:
            raise DataError(f"{root}: no SOS split found; expected {root}/train/{sensor} or {root}/test/{sensor}")
    elif split in SOS_SPLITS:
        splits = [split]
    else:
        raise ValueError(f"split must be one of {SOS_SPLITS} or None, got {split!r}")

    result = {}
    for name in splits:
        pairs = _sos_pairs(root, sensor, name)
        source = f"sos/{sensor}/{name}"

        def records(pairs=pairs, source=source):
            for sample_id, image_path, mask_path in pairs:
                image = read_sar_grey(image_path)
                mask = read_sar_grey(mask_path)
                check_pair(image, mask, image_path, mask_path)
                yield {"image": image, "mask": (mask > 127).astype(np.uint8), "id": sample_id, "source": source}

        paths = [p for _, image_path, mask_path in pairs for p in (image_path, mask_path)]
        result[name] = build_split(
            records, SOS_CLASSES, ["sos", sensor, name, *file_signature(paths)], description=source
        )
    return datasets.DatasetDict(result)
