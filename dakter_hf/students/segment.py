"""Segment whole SAR scenes with a student: read, rescale, tile (`dakter_hf.students.tiling`), write.

Shared by `dakter segment` and the Space, so both give the same masks: both read through
`data.raster.read_grey` (one grey image and one valid-pixel mask per file) and write
`NODATA_ID` (255) at the file's no-data pixels (`class_mask`).

Uncertainty: `entropy_map`, the entropy of the class probabilities per pixel, computed after
tiling has blended the windows' probabilities (the entropy of a blend is not the blend of the
windows' entropies). `dakter segment` writes it, and the oil probability, as float32 GeoTIFFs
with the input's georeferencing.
"""

from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np
import torch.nn.functional as F
from PIL import Image

from dakter_hf.data.geotiff import georeference, write_probability_geotiff
from dakter_hf.data.raster import NODATA_ID, Normalization, read_grey
from dakter_hf.students.inference import grey_to_unit_tensor, probability_predictor
from dakter_hf.students.models import student_resolution
from dakter_hf.students.tiling import predict_tiled
from dakter_hf.utils.files import atomic_path, atomic_write


def student_normalization(model):
    """The pixel normalisation the student's training data had (recorded in its config), for new scenes."""

    recorded = (getattr(model.config, "sar_input", None) or {}).get("normalization")
    return Normalization.from_dict(recorded) if recorded else Normalization()


def training_pixel_scale(model) -> float:
    """Resize factor the student was trained at (its resolution / its training images' size)."""
    return float(getattr(model.config, "dakter_pixel_scale", None) or 1.0)


def segment_array(
    grey: np.ndarray,
    model,
    processor=None,
    pixel_scale: Optional[float] = None,
    overlap: float = 0.25,
    batch_size: int = 8,
    device: str = "cpu",
    max_pixels: Optional[int] = None,
    progress: bool = False,
) -> np.ndarray:
    """(C, H, W) float32 class probabilities for a grey uint8 scene of any size.

    The scene is resized by `pixel_scale` (default: the student's training scale), cut
    into overlapping windows of the student's input size, and the blended probabilities
    are resized back to H x W.
    """
    window = student_resolution(model, processor)
    if not window:
        raise ValueError("the student records no input size; cannot choose a window")
    scale = training_pixel_scale(model) if pixel_scale is None else pixel_scale
    image = grey_to_unit_tensor(grey).to(device)
    height, width = image.shape[-2:]
    if scale != 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=scale < 1)[0]
    probabilities = predict_tiled(
        image,
        probability_predictor(model, device),
        window=window,
        overlap=overlap,
        batch_size=batch_size,
        max_pixels=max_pixels,
        progress=progress,
    )
    if probabilities.shape[-2:] != (height, width):
        probabilities = F.interpolate(probabilities[None], size=(height, width), mode="bilinear", align_corners=False)[
            0
        ]
    return probabilities.cpu().numpy()


def class_mask(probabilities: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W) uint8 argmax class ids of (C, H, W) probabilities, NODATA_ID where `valid` is False."""
    mask = probabilities.argmax(0).astype(np.uint8)
    if valid is not None:
        mask[~valid] = NODATA_ID
    return mask


def entropy_map(probabilities: np.ndarray) -> np.ndarray:
    """(H, W) float32 entropy -sum_c p_c ln p_c in nats (0: certain, ln C: uniform) of (C, H, W) probabilities.

    Pass blended probabilities (what `segment_array` returns); NaN pixels (no data) stay NaN.
    """
    p = probabilities.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    entropy = -terms.sum(0)
    entropy[np.isnan(p).any(0)] = np.nan
    return np.clip(entropy, 0.0, None).astype(np.float32)  # rounding can give -0.0 for a certain pixel


def segment_file(path: str, model, processor, out: str, oil_class: int = 1, **kwargs) -> Dict[str, str]:
    """Write a scene's NAME_mask.png, NAME_probabilities.npy, NAME_oil.png, NAME_oil_probability.tif and
    NAME_entropy.tif; `kwargs` go to `segment_array`.

    mask: class ids, NODATA_ID at the file's no-data pixels; probabilities: float16 (C, H, W),
    NaN at no-data pixels; oil: oil probability x 255, 0 at no-data pixels; the two TIFFs: float32
    oil probability and entropy (nats, `entropy_map`), with the input's georeferencing tags, NaN
    at no-data pixels.
    """
    grey = read_grey(path, student_normalization(model), max_pixels=kwargs.get("max_pixels"))
    probabilities = segment_array(grey.image, model, processor, **kwargs)
    valid = None if grey.valid.all() else grey.valid
    mask = class_mask(probabilities, valid)
    if valid is not None:
        probabilities = np.where(valid, probabilities, np.float32("nan"))
    stem = os.path.join(out, os.path.splitext(os.path.basename(path))[0])
    paths = {
        "mask": stem + "_mask.png",
        "probabilities": stem + "_probabilities.npy",
        "oil": stem + "_oil.png",
        "oil_probability": stem + "_oil_probability.tif",
        "entropy": stem + "_entropy.tif",
    }
    _save_png(Image.fromarray(mask, mode="L"), paths["mask"])
    oil = np.nan_to_num(probabilities[oil_class], nan=0.0)
    _save_png(Image.fromarray((oil * 255).round().astype(np.uint8), mode="L"), paths["oil"])
    with atomic_write(paths["probabilities"], "wb") as handle:
        np.save(handle, probabilities.astype(np.float16))
    height, width = mask.shape
    _, _, geotags = georeference(grey.raster.tags, height)
    write_probability_geotiff(paths["oil_probability"], probabilities[oil_class], geotags, valid)
    entropy = entropy_map(probabilities)
    write_probability_geotiff(paths["entropy"], entropy, geotags, valid)
    count = int(grey.valid.sum())
    oil_percent = 100.0 * int((mask == oil_class).sum()) / count if count else 0.0
    nodata = f", {height * width - count:,} no-data pixels left out" if valid is not None else ""
    mean_entropy = float(np.nanmean(entropy)) if count else float("nan")
    paths["summary"] = (
        f"{width}x{height}, oil {oil_percent:.2f} % of the valid pixels{nodata}, mean entropy {mean_entropy:.3f} nats"
    )
    return paths


def _save_png(image: Image.Image, path: str) -> None:
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")
