"""OSD (Oil Spill Detection dataset, Krestenitis et al. 2019) in its official layout.

    ROOT/{train,test}/images/NAME.jpg     SAR image (read as one grey channel)
    ROOT/{train,test}/labels/NAME.png     RGB mask, one colour per class

`labels_1D/` may also be present; it is ignored (the RGB `labels/` are read).
If ROOT itself holds `images/` and `labels/`, it is one split (named `split`, or
`train`).

Classes follow the colour table of the dataset:

    0 sea surface  black  (0, 0, 0)
    1 oil spill    cyan   (0, 255, 255)
    2 look-alike   red    (255, 0, 0)
    3 ship         brown  (153, 76, 0)
    4 land         green  (0, 153, 0)

Every image is cut into `patch_size` x `patch_size` patches that do not overlap,
except that the last row and last column of patches are shifted back to end at
the image edge (see :func:`patch_origins`): a 650x1250 image gives 3 x 5 = 15
patches of 256x256.

Patches that are entirely sea surface are thinned out: of all such patches of a
split, exactly `round(keep_all_sea_fraction * count)` (rounded half up) are kept,
chosen by `numpy.random.default_rng([seed, crc32(split)])` over the sorted list of
their keys `(image stem, row, col)`. The choice thus depends only on the seed, the
split and the set of all-sea patches, never on reading order. Every patch holding
another class is kept. A first pass reads the masks only (one at a time) to find
the all-sea patches; the second pass generates the records.
"""

from __future__ import annotations

import math
import os
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import datasets
import numpy as np

from dakter_hf.data.build import build_split, check_sizes, file_signature, require_dir
from dakter_hf.data.features import OSD_CLASSES
from dakter_hf.data.raster import read_image, read_rgb, read_sar_grey
from dakter_hf.errors import DataError


OSD_SPLITS = ("train", "test")
OSD_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

# class id -> RGB colour of the OSD masks
OSD_COLOURS: Tuple[Tuple[int, int, int], ...] = (
    (0, 0, 0),  # sea surface
    (0, 255, 255),  # oil spill
    (255, 0, 0),  # look-alike
    (153, 76, 0),  # ship
    (0, 153, 0),  # land
)

_MAX_LISTED_COLOURS = 10


def patch_origins(length: int, patch: int) -> List[int]:
    """Start offsets of the patches along one axis.

    Non-overlapping patches from 0, the last one shifted back so it ends at `length`:
    `patch_origins(650, 256) == [0, 256, 394]`.
    """
    if patch <= 0:
        raise ValueError(f"patch size must be positive, got {patch}")
    if length < patch:
        raise ValueError(f"length {length} is smaller than the patch size {patch}")
    count = math.ceil(length / patch)
    return [i * patch for i in range(count - 1)] + [length - patch]


def colours_to_ids(rgb: np.ndarray, path: str = "mask") -> np.ndarray:
    """Map an OSD RGB mask (H, W, 3) to class ids (H, W); off-table colours raise DataError."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"{path}: expected an RGB mask, got an array of shape {rgb.shape}")
    codes = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    ids = np.zeros(codes.shape, dtype=np.uint8)
    known = np.zeros(codes.shape, dtype=bool)
    for class_id, (r, g, b) in enumerate(OSD_COLOURS):
        hit = codes == ((r << 16) | (g << 8) | b)
        ids[hit] = class_id
        known |= hit
    if not known.all():
        off = np.unique(codes[~known])
        listed = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in off[:_MAX_LISTED_COLOURS].tolist())
        more = f" and {len(off) - _MAX_LISTED_COLOURS} more" if len(off) > _MAX_LISTED_COLOURS else ""
        table = ", ".join(f"{name} {colour}" for name, colour in zip(OSD_CLASSES, OSD_COLOURS))
        raise DataError(
            f"{path}: {int((~known).sum())} pixels have colours outside the OSD colour table: {listed}{more}; "
            f"expected only {table}"
        )
    return ids


def _image_size(path: str) -> Tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    return read_image(path, lambda image: image.size)


def _read_mask_ids(path: str) -> np.ndarray:
    return colours_to_ids(read_rgb(path), path)


def _osd_pairs(base: str, split: str) -> List[Tuple[str, str, str]]:
    image_dir = require_dir(os.path.join(base, "images"), f"OSD {split} images (images/)")
    mask_dir = require_dir(os.path.join(base, "labels"), f"OSD {split} RGB masks (labels/)")
    pairs = []
    for name in sorted(os.listdir(image_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in OSD_IMAGE_EXTENSIONS:
            continue
        image_path = os.path.join(image_dir, name)
        mask_path = os.path.join(mask_dir, stem + ".png")
        if not os.path.isfile(mask_path):
            raise DataError(f"{image_path}: no mask for this image; expected {mask_path}")
        pairs.append((stem, image_path, mask_path))
    if not pairs:
        raise DataError(
            f"{image_dir}: empty dataset, expected images named NAME.jpg with RGB masks {mask_dir}/NAME.png"
        )
    stems = [stem for stem, _, _ in pairs]
    if len(set(stems)) != len(stems):
        duplicate = sorted({s for s in stems if stems.count(s) > 1})[0]
        raise DataError(f"{image_dir}: several images share the name {duplicate!r} (different extensions)")
    return pairs


def _scan(pairs, patch_size: int):
    """First pass, masks only: patch grid per image and the keys of all-sea patches."""
    grids: Dict[str, Tuple[List[int], List[int]]] = {}
    all_sea: List[Tuple[str, int, int]] = []
    for stem, image_path, mask_path in pairs:
        width, height = _image_size(image_path)
        ids = _read_mask_ids(mask_path)
        check_sizes((height, width), ids.shape, image_path, mask_path)
        if height < patch_size or width < patch_size:
            raise DataError(
                f"{image_path}: image is {width}x{height} (WxH), smaller than the {patch_size}x{patch_size} "
                f"patches; expected at least {patch_size} pixels in each dimension"
            )
        rows, cols = patch_origins(height, patch_size), patch_origins(width, patch_size)
        grids[stem] = (rows, cols)
        for r, y in enumerate(rows):
            for c, x in enumerate(cols):
                if not ids[y : y + patch_size, x : x + patch_size].any():
                    all_sea.append((stem, r, c))
    return grids, all_sea


def select_all_sea(keys: Sequence[Tuple[str, int, int]], fraction: float, seed: int, split: str):
    """The all-sea patch keys to keep: round-half-up(fraction * count) of them, seeded, order-free."""
    keys = sorted(set(keys))
    count = int(math.floor(fraction * len(keys) + 0.5))
    if count <= 0:
        return set()
    if count >= len(keys):
        return set(keys)
    rng = np.random.default_rng([int(seed), zlib.crc32(split.encode())])
    chosen = rng.choice(len(keys), size=count, replace=False)
    return {keys[i] for i in chosen.tolist()}


def _layout(root: str, split: Optional[str]) -> Dict[str, str]:
    require_dir(root, "OSD root")
    present = [s for s in OSD_SPLITS if os.path.isdir(os.path.join(root, s))]
    if present:
        if split is None:
            return {s: os.path.join(root, s) for s in present}
        if split not in present:
            raise DataError(f"{root}: no OSD '{split}' split folder; found {present}")
        return {split: os.path.join(root, split)}
    if os.path.isdir(os.path.join(root, "images")) or os.path.isdir(os.path.join(root, "labels")):
        return {split or "train": root}
    raise DataError(
        f"{root}: no OSD data found; expected {root}/train/images + labels, {root}/test/images + labels, "
        f"or {root}/images + labels"
    )


def load_osd(
    root: str,
    split: Optional[str] = None,
    seed: int = 0,
    patch_size: int = 256,
    keep_all_sea_fraction: float = 0.2,
) -> datasets.DatasetDict:
    """Load OSD as a DatasetDict of patches (features: image, mask, id, source, classes).

    Args:
        root: folder holding `train/` and/or `test/` (each with `images/` and `labels/`),
            or holding `images/` and `labels/` itself.
        split: `train`, `test` (or any name when ROOT is a single split), None for every split.
        seed: seeds the choice of the all-sea patches that are kept.
        patch_size: side of the square patches (256 in the OSD paper).
        keep_all_sea_fraction: fraction of the all-sea-surface patches kept (0.2 in the paper).
    """
    if not isinstance(patch_size, (int, np.integer)) or patch_size <= 0:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
    if not 0.0 <= float(keep_all_sea_fraction) <= 1.0:
        raise ValueError(f"keep_all_sea_fraction must lie in [0, 1], got {keep_all_sea_fraction!r}")
    patch_size = int(patch_size)

    result = {}
    for name, base in _layout(root, split).items():
        pairs = _osd_pairs(base, name)
        grids, all_sea = _scan(pairs, patch_size)
        kept_sea = select_all_sea(all_sea, float(keep_all_sea_fraction), seed, name)
        dropped = set(all_sea) - kept_sea
        total = sum(len(rows) * len(cols) for rows, cols in grids.values())
        source = f"osd/{name}"

        def records(pairs=pairs, grids=grids, dropped=dropped, source=source):
            for stem, image_path, mask_path in pairs:
                rows, cols = grids[stem]
                if all((stem, r, c) in dropped for r in range(len(rows)) for c in range(len(cols))):
                    continue
                image = read_sar_grey(image_path)
                ids = _read_mask_ids(mask_path)
                for r, y in enumerate(rows):
                    for c, x in enumerate(cols):
                        if (stem, r, c) in dropped:
                            continue
                        yield {
                            "image": np.ascontiguousarray(image[y : y + patch_size, x : x + patch_size]),
                            "mask": np.ascontiguousarray(ids[y : y + patch_size, x : x + patch_size]),
                            "id": f"{stem}_r{r}_c{c}",
                            "source": source,
                        }

        paths = [p for _, image_path, mask_path in pairs for p in (image_path, mask_path)]
        result[name] = build_split(
            records,
            OSD_CLASSES,
            ["osd", name, int(seed), patch_size, float(keep_all_sea_fraction), *file_signature(paths)],
            description=f"{source}: every patch of {base} is all sea surface and none was kept",
            expected_count=total - len(dropped),
        )
    return datasets.DatasetDict(result)
