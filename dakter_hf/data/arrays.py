"""Conversions shared by the loaders, the balancing factor and training."""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np
from PIL import Image


def to_grey_array(image) -> np.ndarray:
    """PIL image or array -> uint8/float (H, W) grey array."""
    if isinstance(image, Image.Image):
        if image.mode != "L":
            image = image.convert("L")
        return np.asarray(image)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
        array = (
            array[..., 0] if array.shape[-1] == 1 else np.asarray(Image.fromarray(array.astype(np.uint8)).convert("L"))
        )
    if array.ndim != 2:
        raise ValueError(f"expected a grey image of shape (H, W), got shape {array.shape}")
    return array


def image_to_unit_range(image) -> np.ndarray:
    """Grey image with values 0..255 -> float64 in [-1, 1] (x0 of the paper)."""
    return to_grey_array(image).astype(np.float64) / 127.5 - 1.0


def mask_to_ids(mask) -> np.ndarray:
    """Mask image holding class ids -> int64 (H, W)."""
    return to_grey_array(mask).astype(np.int64)


def resize_pair(image, mask, resolution: Optional[int]) -> Tuple[object, object]:
    """Resize an (image, mask) pair to resolution x resolution: bilinear image, nearest mask."""
    if resolution is None:
        return image, mask
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(to_grey_array(image), dtype=np.uint8))
    if not isinstance(mask, Image.Image):
        mask = Image.fromarray(np.asarray(to_grey_array(mask), dtype=np.uint8))
    size = (int(resolution), int(resolution))
    if image.size != size:
        image = image.convert("L").resize(size, Image.BILINEAR)
    if mask.size != size:
        mask = mask.convert("L").resize(size, Image.NEAREST)
    return image, mask


def is_dataset(data) -> bool:
    """True for a `datasets.Dataset` (or IterableDataset): anything with features and column names."""
    return hasattr(data, "features") and hasattr(data, "column_names")


def iter_image_mask_pairs(data, image_key: str = "image", mask_key: str = "mask") -> Iterator[Tuple[object, object]]:
    """(image, mask) of every example of `data`, in order.

    `data` is a `datasets.Dataset` (only its `image_key` and `mask_key` columns
    are decoded, so e.g. soft-label arrays in other columns cost nothing), or an
    iterable of `(image, mask)` pairs or of dicts holding `image_key` and
    `mask_key`. Images and masks are yielded as stored (PIL images or arrays).
    """
    if is_dataset(data):
        for row in data.select_columns([image_key, mask_key]):
            yield row[image_key], row[mask_key]
    else:
        for item in data:
            if isinstance(item, dict):
                yield item[image_key], item[mask_key]
            else:
                image, mask = item
                yield image, mask
