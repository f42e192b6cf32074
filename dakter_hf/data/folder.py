"""Generic folder of images and masks, for data in no known layout.

    ROOT/[split/]images/NAME.{png,jpg,jpeg,tif,tiff,bmp}
    ROOT/[split/]masks/NAME.png     pixel value = class id (0..C-1)

Split folders (`train`, `validation`, `test`) are used when present; otherwise
ROOT itself is one `train` split.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import datasets
import numpy as np

from dakter_hf.data.build import build_split, check_class_ids, check_pair, file_signature, require_dir
from dakter_hf.data.raster import IMAGE_EXTENSIONS, Normalization, read_mask_ids, read_sar_grey
from dakter_hf.errors import DataError


FOLDER_SPLITS = ("train", "validation", "test")


def _folder_pairs(base: str):
    image_dir = require_dir(os.path.join(base, "images"), "images")
    mask_dir = require_dir(os.path.join(base, "masks"), "masks")
    pairs = []
    for name in sorted(os.listdir(image_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS:
            continue
        mask_path = os.path.join(mask_dir, stem + ".png")
        if not os.path.isfile(mask_path):
            raise DataError(f"{os.path.join(image_dir, name)}: no mask for this image; expected {mask_path}")
        pairs.append((stem, os.path.join(image_dir, name), mask_path))
    if not pairs:
        raise DataError(f"{image_dir}: empty dataset, expected image files ({', '.join(IMAGE_EXTENSIONS)})")
    return pairs


def load_folder(
    root: str, class_names: Sequence[str], split: Optional[str] = None, normalization=None
) -> datasets.DatasetDict:
    """Load `images/` + `masks/` folders (optionally under split folders) as a DatasetDict.

    Images of any depth (8/16-bit PNG or TIFF, float32 GeoTIFF) become grey uint8 through
    `normalization` (a `sar_image.Normalization`; default: 8-bit as stored, others a
    1-99 percentile stretch). Masks keep their values; any value outside the class table
    is an error naming the file.
    """

    normalization = normalization or Normalization()
    class_names = list(class_names)
    require_dir(root, "dataset root")
    present = [s for s in FOLDER_SPLITS if os.path.isdir(os.path.join(root, s))]
    if split is not None:
        if present and split not in present:
            raise DataError(f"{root}: no '{split}' split folder; found {present}")
        if not present and split != "train":
            raise DataError(f"{root}: has no split folders, so only split 'train' exists")
    layout = {s: os.path.join(root, s) for s in present} if present else {"train": root}
    if split is not None:
        layout = {split: layout[split]}

    result = {}
    for name, base in layout.items():
        pairs = _folder_pairs(base)
        source = f"folder/{os.path.basename(os.path.abspath(root))}/{name}"

        def records(pairs=pairs, source=source):
            for sample_id, image_path, mask_path in pairs:
                image = read_sar_grey(image_path, normalization)
                mask = read_mask_ids(mask_path)
                check_pair(image, mask, image_path, mask_path)
                check_class_ids(mask, len(class_names), mask_path, class_names)
                yield {"image": image, "mask": mask.astype(np.uint8), "id": sample_id, "source": source}

        paths = [p for _, a, b in pairs for p in (a, b)]
        result[name] = build_split(
            records, class_names, ["folder", name, normalization.to_dict(), *file_signature(paths)], description=source
        )
    return datasets.DatasetDict(result)
