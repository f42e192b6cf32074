"""`quality_report`: a real and a generated SAR segmentation dataset, compared on the statistics of
:mod:`dakter_hf.evaluation.statistics` (printed by :mod:`dakter_hf.evaluation.formatting`)."""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import datasets
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from dakter_hf.data.arrays import is_dataset, iter_image_mask_pairs, mask_to_ids, to_grey_array
from dakter_hf.data.features import class_names_of, oil_class_candidates, oil_class_index
from dakter_hf.evaluation.soft_labels import (
    DEFAULT_BOUNDARY_WIDTH,
    DEFAULT_KD_TEMPERATURE,
    ClassFractions,
    SoftLabelStatistics,
    class_fraction_comparison,
    has_soft_labels,
    iter_soft_label_batches,
)
from dakter_hf.evaluation.statistics import (
    GREY_LEVELS,
    DatasetStatistics,
    finite_or_none,
    grey_float,
    histogram_distance,
    rebin_histogram,
    spectrum_distance,
)


__all__ = ["quality_report"]


def _unwrap_dataset(data, name: str, notes: List[str]):
    """A DatasetDict -> its train split (or its only split)."""
    if isinstance(data, datasets.DatasetDict):
        splits = list(data.keys())
        if len(splits) == 1:
            return data[splits[0]]
        if "train" in data:
            notes.append(f"{name}: DatasetDict with splits {splits}; using 'train'")
            return data["train"]
        raise ValueError(f"{name} is a DatasetDict with splits {splits}; pass one split")
    return data


def _limit(data, max_images: Optional[int]):
    if max_images is None:
        return data
    if is_dataset(data):
        return data.select(range(min(int(max_images), len(data))))
    return list(data)[: int(max_images)]


def _class_names(data) -> Optional[List[str]]:
    if not is_dataset(data):
        return None

    try:
        return class_names_of(data)
    except ValueError:
        return None


def _default_oil_class(names: Optional[List[str]], notes: List[str]) -> int:
    """:func:`~dakter_hf.data.features.oil_class_index` of the class names, noting any guess; 1 if unknown."""
    if not names:
        notes.append("class names unknown; using class 1 as oil")
        return 1

    matches = oil_class_candidates(names)
    if len(matches) > 1:
        notes.append(f"several classes contain 'oil' ({[names[i] for i in matches]}); using {names[matches[0]]!r}")
    if not matches:
        notes.append(f"no class name contains 'oil' in {names}; using class 1 as oil")
        if len(names) < 2:  # oil_class_index refuses a single non-oil class; keep the documented default
            return 1
    return oil_class_index(names)


def _pil_grey(array_or_image) -> Image.Image:
    if isinstance(array_or_image, Image.Image):
        return array_or_image.convert("L") if array_or_image.mode != "L" else array_or_image
    array = to_grey_array(array_or_image)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    return Image.fromarray(array)


def quality_report(
    real,
    generated,
    oil_class: Optional[int] = None,
    sea_class: int = 0,
    max_images: Optional[int] = None,
    window: int = 8,
    bins: int = 64,
    show_progress: bool = False,
    kd_temperature: float = DEFAULT_KD_TEMPERATURE,
    boundary_width: int = DEFAULT_BOUNDARY_WIDTH,
    soft_label_batch_size: int = 16,
) -> Dict[str, object]:
    """Compare a real and a generated SAR segmentation dataset; JSON-serialisable dict.

    Args:
        real, generated: `datasets.Dataset` (or a DatasetDict: its 'train' or only
            split) with `image` and `mask` columns, or a list of (image, mask)
            pairs / {"image", "mask"} dicts (PIL or arrays, pixel values 0..255).
        oil_class: class id of oil; default the first class whose name contains
            "oil" (from the generated dataset's features, else the real one's),
            else 1.
        sea_class: class id of open sea, for the speckle statistics.
        max_images: use only the first ``max_images`` of each dataset.
        window: speckle tile size (see :func:`~dakter_hf.evaluation.statistics.speckle_stats`).
        bins: histogram bins for the Jensen-Shannon divergence (must divide 256).
        kd_temperature, boundary_width: of the soft-label statistics (see
            :mod:`dakter_hf.evaluation.soft_labels`), read `soft_label_batch_size` rows at a time.

    Real images whose size differs from the first generated image's are resized
    to it (bilinear image, nearest mask, PIL), which is noted: the resizing
    averages speckle, so the real ENL is that of the resized images (which is
    what a model trained at that resolution sees). Everything is accumulated one
    image at a time; only the per-tile speckle values are kept until the end.

    Returns ``{"real": {...}, "generated": {...}, "distance": {"histogram_js",
    "histogram_w1", "spectrum_log10_mad"}, "soft_labels", "class_fractions", "notes": [...],
    "num_real", "num_generated", "oil_class", "sea_class", "class_names", "settings"}``.
    ``soft_labels``: :meth:`~dakter_hf.evaluation.soft_labels.SoftLabelStatistics.result` of the
    generated set's `soft_label` logits, None without them (L2 labels); ``class_fractions``:
    :func:`~dakter_hf.evaluation.soft_labels.class_fraction_comparison` of the per-image class
    fractions of the generated masks against the (resized) real ones.
    Per-dataset keys: see :func:`~dakter_hf.evaluation.formatting.format_quality_table` rows plus ``histogram``
    (``bins`` probabilities) and ``spectrum`` (power per radial bin, bin
    centres from :func:`~dakter_hf.evaluation.statistics.radial_frequencies`).
    """
    if GREY_LEVELS % bins:
        raise ValueError(f"bins must divide {GREY_LEVELS}, got {bins}")
    notes: List[str] = []
    real = _limit(_unwrap_dataset(real, "real", notes), max_images)
    generated = _limit(_unwrap_dataset(generated, "generated", notes), max_images)

    names = _class_names(generated) or _class_names(real)
    real_names = _class_names(real)
    if names and real_names and names != real_names:
        notes.append(f"class names differ: real {real_names}, generated {names}; using the generated ones")
    if oil_class is None:
        oil_class = _default_oil_class(names, notes)

    gen_iter = iter_image_mask_pairs(generated)
    try:
        first_image, first_mask = next(gen_iter)
    except StopIteration:
        raise ValueError("the generated dataset is empty") from None
    first = grey_float(first_image)
    target_hw = first.shape
    num_bins = max(1, min(target_hw) // 2)

    def progress(iterable, total, desc):
        if not show_progress:
            return iterable

        return tqdm(iterable, total=total, desc=desc)

    num_classes = len(names) if names else None
    gen_acc = DatasetStatistics(oil_class, sea_class, window, num_bins)
    gen_fractions, real_fractions = ClassFractions(num_classes), ClassFractions(num_classes)
    gen_acc.add(first, mask_to_ids(first_mask))
    gen_fractions.add(mask_to_ids(first_mask))
    total_gen = len(generated) - 1 if hasattr(generated, "__len__") else None
    for image, mask in progress(gen_iter, total_gen, "quality: generated"):
        image, ids = grey_float(image), mask_to_ids(mask)
        if image.shape != ids.shape:
            raise ValueError(f"a generated image has shape {image.shape} but its mask {ids.shape}")
        gen_acc.add(image, ids)
        gen_fractions.add(ids)

    real_acc = DatasetStatistics(oil_class, sea_class, window, num_bins)
    resized: Dict[Tuple[int, int], int] = {}
    target_wh = (target_hw[1], target_hw[0])
    total_real = len(real) if hasattr(real, "__len__") else None
    for image, mask in progress(iter_image_mask_pairs(real), total_real, "quality: real"):
        pil_image, pil_mask = _pil_grey(image), _pil_grey(mask)
        if pil_image.size != pil_mask.size:
            raise ValueError(f"a real image has size {pil_image.size} but its mask {pil_mask.size}")
        if pil_image.size != target_wh:
            key = (pil_image.size[1], pil_image.size[0])
            resized[key] = resized.get(key, 0) + 1
            pil_image = pil_image.resize(target_wh, Image.BILINEAR)
            pil_mask = pil_mask.resize(target_wh, Image.NEAREST)
        ids = mask_to_ids(pil_mask)
        real_acc.add(grey_float(pil_image), ids)
        real_fractions.add(ids)
    if real_acc.n == 0:
        raise ValueError("the real dataset is empty")
    if resized:
        sizes = ", ".join(f"{n} x {h}x{w}" for (h, w), n in sorted(resized.items()))
        notes.append(
            f"real images resized to the generated size {target_hw[0]}x{target_hw[1]} (HxW; bilinear image, "
            f"nearest mask): {sizes}; resizing averages speckle, so the real ENL is that of the resized images"
        )
    if len(gen_acc.sizes) > 1:
        notes.append(f"generated images have several sizes {sorted(gen_acc.sizes)}; real images resized to the first")
    if real_acc.n != gen_acc.n:
        notes.append(
            f"{real_acc.n} real vs {gen_acc.n} generated images; the statistics are per-dataset means/medians"
        )
    for name, acc in (("real", real_acc), ("generated", gen_acc)):
        if not acc.alignment.inside:
            notes.append(f"{name}: no image holds oil (class {oil_class}); inside-oil brightness undefined")
        if not acc.speckle.num_windows():
            notes.append(
                f"{name}: no {window}x{window} tile lies entirely in sea (class {sea_class}); ENL/CV undefined"
            )

    soft = None
    if has_soft_labels(generated):
        soft_acc = SoftLabelStatistics(kd_temperature, boundary_width)
        batches = iter_soft_label_batches(generated, soft_label_batch_size)
        total = math.ceil(len(generated) / soft_label_batch_size)
        for logits, masks in progress(batches, total, "quality: soft labels"):
            soft_acc.add(logits, masks)
        soft = soft_acc.result()
    else:
        notes.append("generated: no soft_label column (L2 labels?); only the class fractions of its masks")

    hist_real, hist_gen = real_acc.histogram(), gen_acc.histogram()
    w1 = histogram_distance(hist_real, hist_gen)["w1"]
    js = histogram_distance(rebin_histogram(hist_real, bins), rebin_histogram(hist_gen, bins))["js"]
    return {
        "real": real_acc.result(bins),
        "generated": gen_acc.result(bins),
        "distance": {
            "histogram_js": finite_or_none(js),
            "histogram_w1": finite_or_none(w1),
            "spectrum_log10_mad": finite_or_none(spectrum_distance(real_acc.spectrum(), gen_acc.spectrum())),
        },
        "soft_labels": soft,
        "class_fractions": class_fraction_comparison(real_fractions, gen_fractions, names, oil_class),
        "notes": notes,
        "num_real": real_acc.n,
        "num_generated": gen_acc.n,
        "oil_class": int(oil_class),
        "sea_class": int(sea_class),
        "class_names": names,
        "settings": {
            "window": int(window),
            "bins": int(bins),
            "spectrum_bins": int(num_bins),
            "w1_bins": GREY_LEVELS,
            "max_images": max_images,
            "kd_temperature": float(kd_temperature),
            "boundary_width": int(boundary_width),
        },
    }
