"""Turn loader records into a `datasets.Dataset` with the shared features.

Loaders yield plain records {"image": uint8 (H, W), "mask": uint8 (H, W) class ids,
"id": str, "source": str}; this module validates them, adds the `classes` column
and builds the Arrow dataset through `Dataset.from_generator`, so memory stays
flat however many images a folder holds.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
from typing import Callable, Iterator, List, Optional, Sequence

import datasets
import numpy as np
from PIL import Image

from dakter_hf.data.features import classes_present, segmentation_features
from dakter_hf.errors import DataError


_CACHE_DIR: contextvars.ContextVar = contextvars.ContextVar("dakter_datasets_cache", default=None)


@contextlib.contextmanager
def building_cache(cache_dir: Optional[str]):
    """Build loader datasets in `cache_dir` instead of the shared `~/.cache/huggingface/datasets`.

    `dakter data` builds into its staging folder, so converting a dataset does not leave a
    second full copy in the user's cache.
    """
    token = _CACHE_DIR.set(cache_dir)
    try:
        yield
    finally:
        _CACHE_DIR.reset(token)


def check_class_ids(mask: np.ndarray, num_classes: int, path: str, class_names=None) -> None:
    """Every mask value must be a class id: an error naming the file and the values otherwise."""
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) >= num_classes):
        bad = sorted(int(v) for v in np.unique(mask) if v < 0 or v >= num_classes)
        names = f" ({list(class_names)})" if class_names else ""
        raise DataError(
            f"{path}: mask holds class id value(s) {bad[:10]} outside the class table; expected class ids "
            f"0..{num_classes - 1}{names}"
        )


def check_pair(image: np.ndarray, mask: np.ndarray, image_path: str, mask_path: str) -> None:
    check_sizes(image.shape[:2], mask.shape[:2], image_path, mask_path)


def check_sizes(image_hw, mask_hw, image_path: str, mask_path: str) -> None:
    """Image and mask must have the same (height, width)."""
    if tuple(image_hw) != tuple(mask_hw):
        raise DataError(
            f"{mask_path}: mask is {mask_hw[1]}x{mask_hw[0]} (WxH) but its image {image_path} "
            f"is {image_hw[1]}x{image_hw[0]}; expected the same size"
        )


def require_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise DataError(f"{path}: {what} folder not found")
    return path


def _generate(make_records: Callable[[], Iterator[dict]], num_classes: int):
    for record in make_records():
        mask = np.asarray(record["mask"], dtype=np.uint8)
        if mask.size and int(mask.max()) >= num_classes:
            raise DataError(f"{record['id']}: mask holds class id {int(mask.max())}, expected ids below {num_classes}")
        yield {
            "image": Image.fromarray(np.asarray(record["image"], dtype=np.uint8), mode="L"),
            "mask": Image.fromarray(mask, mode="L"),
            "id": str(record["id"]),
            "source": str(record["source"]),
            "classes": classes_present(mask),
        }


def build_split(
    make_records: Callable[[], Iterator[dict]],
    class_names: Sequence[str],
    fingerprint_parts: Sequence[object],
    description: str = "",
    expected_count: Optional[int] = None,
) -> datasets.Dataset:
    """Build one split from a record generator.

    `fingerprint_parts` identify the content (paths, sizes, mtimes, seeds) so that
    the Arrow cache is reused exactly when the input is unchanged.
    """
    if expected_count == 0:
        raise DataError(f"empty dataset: no images found ({description})")
    key = hashlib.sha256(repr((_loader_code_hash(), list(fingerprint_parts), list(class_names))).encode()).hexdigest()[
        :32
    ]
    features = segmentation_features(class_names)
    try:
        dataset = datasets.Dataset.from_generator(
            _generate,
            features=features,
            gen_kwargs={"make_records": make_records, "num_classes": len(class_names)},
            fingerprint=key,
            cache_dir=_CACHE_DIR.get(),
        )
    except Exception as error:  # datasets wraps errors raised inside the generator
        cause = error
        while cause is not None and not isinstance(cause, DataError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise
    if len(dataset) == 0:
        raise DataError(f"empty dataset: no images found ({description})")
    return dataset


def _loader_code_hash() -> str:
    """Hash of this package's loader code: cached Arrow data is rebuilt whenever a loader changes."""
    digest = hashlib.sha256()
    folder = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as handle:
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def file_signature(paths: List[str]) -> List[object]:
    """(path, size, mtime) of each file: changes whenever the data on disk changes."""
    signature = []
    for path in paths:
        stat = os.stat(path)
        signature.append((os.path.abspath(path), stat.st_size, stat.st_mtime_ns))
    return signature
