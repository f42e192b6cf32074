"""What the soft labels carry: entropy, confidence and where the uncertainty sits, plus per-image class fractions.

A generated dataset stores its soft labels as logits (the `soft_label` column, float16 (C, H, W)); the
probabilities are softmax(logits / T). :class:`SoftLabelStatistics` takes them a batch at a time and gives

* the per-pixel entropy in bits of softmax(logits) (T = 1): its mean, and a histogram of ``entropy_bins``
  equal bins over [0, log2 C] (the last bin holds log2 C);
* the mean entropy at the distillation temperature ``kd_temperature`` (the KD loss's T, 2 as in the paper);
* the fraction of pixels whose top class probability is below ``threshold`` (0.9), at T = 1 and at the
  KD temperature;
* where the uncertainty sits: the *band* is every pixel within ``boundary_width`` pixels (Chebyshev
  distance: a (2w+1) x (2w+1) window, clipped at the image border) of a pixel of another class of the
  argmax mask, so a straight boundary gets w pixels on each side; the other pixels are the *interiors*.
  The mean entropy in each, the band's share of the pixels and of the summed entropy;
* how often the argmax of the soft label is the stored mask (the label the student's CE term sees).

:class:`ClassFractions` keeps each mask's fraction of pixels per class, and :func:`class_fraction_comparison`
sets the generated masks' per-image distribution against the real ones': per class the mean, the quantiles
(10/25/50/75/90 %, numpy's linear interpolation), the fraction of images holding the class at all, and the
1-D Wasserstein distance between the two sets of per-image fractions. Datasets without soft labels (L2-label
generators) get only the class fractions.

Everything here is plain numpy (and scipy's 1-D Wasserstein distance) and streams: nothing is kept per pixel,
only per-image class fractions.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from dakter_hf.data.arrays import is_dataset, mask_to_ids


__all__ = [
    "DEFAULT_KD_TEMPERATURE",
    "DEFAULT_BOUNDARY_WIDTH",
    "DEFAULT_THRESHOLD",
    "DEFAULT_ENTROPY_BINS",
    "DEFAULT_QUANTILES",
    "log_softmax",
    "entropy_bits",
    "top_probability",
    "boundary_band",
    "SoftLabelStatistics",
    "soft_label_statistics",
    "has_soft_labels",
    "iter_soft_label_batches",
    "ClassFractions",
    "class_fraction_comparison",
]

# The KD loss's temperature (the paper's T = 2; students.losses.KD_TEMPERATURE and generation's
# KL_TEMPERATURE, which this layer may not import: a test keeps them equal).
DEFAULT_KD_TEMPERATURE = 2.0
DEFAULT_BOUNDARY_WIDTH = 2
DEFAULT_THRESHOLD = 0.9
DEFAULT_ENTROPY_BINS = 10
DEFAULT_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
_LN2 = math.log(2.0)


# ----------------------------------------------------------------------------
# per-pixel quantities of logits (B, C, H, W)
# ----------------------------------------------------------------------------


def _as_batch(logits) -> np.ndarray:
    """(C, H, W) or (B, C, H, W) logits -> float64 (B, C, H, W); refuses non-finite values."""
    array = np.asarray(logits, dtype=np.float64)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"expected soft labels of shape (C, H, W) or (B, C, H, W), got {array.shape}")
    if array.shape[1] < 2:
        raise ValueError(f"soft labels need at least 2 classes, got {array.shape[1]}")
    if not np.isfinite(array).all():
        raise ValueError("soft labels hold non-finite logits")
    return array


def log_softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """log softmax(logits / T) over the class axis (axis 1 of (B, C, H, W)), float64."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = _as_batch(logits) / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _entropy_of(log_p: np.ndarray) -> np.ndarray:
    """Entropy in bits over axis 1, clipped to [0, log2 C] (rounding)."""
    entropy = -(np.exp(log_p) * log_p).sum(axis=1) / _LN2
    return np.clip(entropy, 0.0, math.log2(log_p.shape[1]))


def entropy_bits(logits, temperature: float = 1.0) -> np.ndarray:
    """Per-pixel entropy in bits of softmax(logits / T): (B, H, W), between 0 and log2 C."""
    return _entropy_of(log_softmax(logits, temperature))


def top_probability(logits, temperature: float = 1.0) -> np.ndarray:
    """Per-pixel top class probability of softmax(logits / T): (B, H, W), between 1/C and 1."""
    return np.exp(log_softmax(logits, temperature).max(axis=1))


def boundary_band(ids, width: int = DEFAULT_BOUNDARY_WIDTH) -> np.ndarray:
    """Pixels within `width` pixels (Chebyshev) of a pixel of another class: bool, the shape of `ids`.

    `ids` is one mask (H, W) or a stack (B, H, W) of class ids. A pixel is in the band when the
    (2w+1) x (2w+1) window around it, clipped at the image border, holds more than one class. The
    image border itself is no boundary; width 0 gives an empty band.
    """
    ids = np.asarray(ids)
    if ids.ndim not in (2, 3):
        raise ValueError(f"expected a mask (H, W) or masks (B, H, W), got shape {ids.shape}")
    if width < 0:
        raise ValueError(f"boundary width must be >= 0, got {width}")
    if width == 0:
        return np.zeros(ids.shape, dtype=bool)
    from scipy import ndimage  # here: `dakter --help` imports this module's defaults, and scipy takes a while

    size = (2 * width + 1,) * 2 if ids.ndim == 2 else (1, 2 * width + 1, 2 * width + 1)
    # mode="nearest" repeats the border pixel, which is itself inside the clipped window
    return ndimage.maximum_filter(ids, size=size, mode="nearest") != ndimage.minimum_filter(
        ids, size=size, mode="nearest"
    )


# ----------------------------------------------------------------------------
# soft-label statistics of a dataset
# ----------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> Optional[float]:
    return float(numerator) / float(denominator) if denominator else None


class SoftLabelStatistics:
    """The soft-label statistics of one dataset (see the module docstring), a batch of logits at a time."""

    def __init__(
        self,
        kd_temperature: float = DEFAULT_KD_TEMPERATURE,
        boundary_width: int = DEFAULT_BOUNDARY_WIDTH,
        threshold: float = DEFAULT_THRESHOLD,
        entropy_bins: int = DEFAULT_ENTROPY_BINS,
    ):
        if not kd_temperature > 0:
            raise ValueError(f"kd_temperature must be > 0, got {kd_temperature}")
        if boundary_width < 0:
            raise ValueError(f"boundary_width must be >= 0, got {boundary_width}")
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if entropy_bins < 1:
            raise ValueError(f"entropy_bins must be >= 1, got {entropy_bins}")
        self.kd_temperature = float(kd_temperature)
        self.boundary_width = int(boundary_width)
        self.threshold = float(threshold)
        self.num_classes: Optional[int] = None
        self.num_images = 0
        self.num_pixels = 0
        self.entropy_sum = 0.0
        self.entropy_kd_sum = 0.0
        self.entropy_counts = np.zeros(int(entropy_bins), dtype=np.int64)
        self.below = 0
        self.below_kd = 0
        self.band_pixels = 0
        self.band_entropy_sum = 0.0
        self.mask_pixels = 0
        self.mask_agree = 0

    def add(self, logits, masks=None) -> None:
        """One batch: logits (B, C, H, W) (or one (C, H, W)); optionally the stored masks (B, H, W)."""
        log_p = log_softmax(logits, 1.0)
        batch, classes = log_p.shape[:2]
        if self.num_classes is None:
            self.num_classes = classes
        elif classes != self.num_classes:
            raise ValueError(f"soft labels with {classes} classes after ones with {self.num_classes}")
        entropy = _entropy_of(log_p)
        entropy_kd = _entropy_of(log_softmax(logits, self.kd_temperature))
        top = np.exp(log_p.max(axis=1))
        top_kd = np.exp(log_softmax(logits, self.kd_temperature).max(axis=1))
        ids = log_p.argmax(axis=1)
        band = boundary_band(ids, self.boundary_width)

        self.num_images += batch
        self.num_pixels += entropy.size
        self.entropy_sum += float(entropy.sum())
        self.entropy_kd_sum += float(entropy_kd.sum())
        counts, _ = np.histogram(entropy, bins=len(self.entropy_counts), range=(0.0, math.log2(classes)))
        self.entropy_counts += counts
        self.below += int((top < self.threshold).sum())
        self.below_kd += int((top_kd < self.threshold).sum())
        self.band_pixels += int(band.sum())
        self.band_entropy_sum += float(entropy[band].sum())
        if masks is not None:
            masks = np.asarray(masks)
            masks = masks[None] if masks.ndim == 2 else masks
            if masks.shape != ids.shape:
                raise ValueError(f"masks of shape {masks.shape} for soft labels of shape {log_p.shape}")
            self.mask_pixels += masks.size
            self.mask_agree += int((masks == ids).sum())

    def result(self) -> Dict[str, object]:
        """JSON-serialisable summary (the keys of `quality_report(...)["soft_labels"]`)."""
        classes = self.num_classes
        max_entropy = math.log2(classes) if classes else None
        interior = self.num_pixels - self.band_pixels
        edges = np.linspace(0.0, max_entropy, len(self.entropy_counts) + 1) if classes else None
        return {
            "num_images": self.num_images,
            "num_pixels": self.num_pixels,
            "num_classes": classes,
            "kd_temperature": self.kd_temperature,
            "threshold": self.threshold,
            "boundary_width": self.boundary_width,
            "entropy_bits_max": max_entropy,
            "entropy_bits_mean": _ratio(self.entropy_sum, self.num_pixels),
            "entropy_bits_mean_kd": _ratio(self.entropy_kd_sum, self.num_pixels),
            "entropy_histogram": {
                "edges": None if edges is None else [float(e) for e in edges],
                "fractions": [_ratio(c, self.num_pixels) for c in self.entropy_counts],
            },
            "top_below_threshold": _ratio(self.below, self.num_pixels),
            "top_below_threshold_kd": _ratio(self.below_kd, self.num_pixels),
            "band_pixel_fraction": _ratio(self.band_pixels, self.num_pixels),
            "band_entropy_bits_mean": _ratio(self.band_entropy_sum, self.band_pixels),
            "interior_entropy_bits_mean": _ratio(self.entropy_sum - self.band_entropy_sum, interior),
            "band_entropy_share": _ratio(self.band_entropy_sum, self.entropy_sum),
            "argmax_matches_mask": _ratio(self.mask_agree, self.mask_pixels),
        }


def soft_label_statistics(
    soft_labels,
    masks=None,
    kd_temperature: float = DEFAULT_KD_TEMPERATURE,
    boundary_width: int = DEFAULT_BOUNDARY_WIDTH,
    threshold: float = DEFAULT_THRESHOLD,
    entropy_bins: int = DEFAULT_ENTROPY_BINS,
) -> Dict[str, object]:
    """:class:`SoftLabelStatistics` of logits (N, C, H, W), one (C, H, W), or an iterable of either.

    `masks` (optional): the stored masks (class ids) in the same layout, for ``argmax_matches_mask``.
    """
    stats = SoftLabelStatistics(kd_temperature, boundary_width, threshold, entropy_bins)
    if isinstance(soft_labels, np.ndarray):
        soft_labels, masks = [soft_labels], (None if masks is None else [masks])
    if masks is None:
        for logits in soft_labels:
            stats.add(logits)
    else:
        for logits, mask in zip(soft_labels, masks, strict=True):
            stats.add(logits, np.asarray(mask, dtype=np.int64))
    return stats.result()


def has_soft_labels(data) -> bool:
    """A dataset with a `soft_label` column, or a list of dicts holding "soft_label"."""
    if is_dataset(data):
        return "soft_label" in data.column_names
    if isinstance(data, (list, tuple)) and data:
        return isinstance(data[0], dict) and "soft_label" in data[0]
    return False


def iter_soft_label_batches(data, batch_size: int = 16) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray]]]:
    """(logits (B, C, H, W), masks (B, H, W) or None) of a dataset, `batch_size` rows at a time.

    `data` is a `datasets.Dataset` with a `soft_label` column (only it and `mask` are decoded), or a
    list of dicts with "soft_label" (and "mask").
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if is_dataset(data):
        columns = ["soft_label"] + (["mask"] if "mask" in data.column_names else [])
        view = data.select_columns(columns).with_format("numpy")
        for start in range(0, len(data), batch_size):
            block = view[start : start + batch_size]
            masks = np.stack([mask_to_ids(m) for m in block["mask"]]) if "mask" in block else None
            yield np.asarray(block["soft_label"]), masks
        return
    for start in range(0, len(data), batch_size):
        rows = data[start : start + batch_size]
        logits = np.stack([np.asarray(row["soft_label"]) for row in rows])
        masks = np.stack([mask_to_ids(row["mask"]) for row in rows]) if all("mask" in row for row in rows) else None
        yield logits, masks


# ----------------------------------------------------------------------------
# per-image class fractions, generated against real
# ----------------------------------------------------------------------------


class ClassFractions:
    """Each mask's fraction of pixels per class, one mask at a time.

    With `num_classes` given, ids at or above it (e.g. an ignore value 255) count for no class;
    without, the classes grow to the largest id seen.
    """

    def __init__(self, num_classes: Optional[int] = None):
        self.num_classes = num_classes
        self.fractions: List[np.ndarray] = []

    def add(self, ids) -> None:
        ids = np.asarray(ids).ravel().astype(np.int64)
        if ids.size == 0:
            raise ValueError("an empty mask has no class fractions")
        if ids.min() < 0:
            raise ValueError(f"a mask holds a negative class id {int(ids.min())}")
        kept = ids if self.num_classes is None else ids[ids < self.num_classes]
        counts = np.bincount(kept, minlength=self.num_classes or 0)
        self.fractions.append(counts / float(ids.size))

    def matrix(self, num_classes: int) -> np.ndarray:
        """(images, num_classes) fractions; classes an image never showed are 0."""
        out = np.zeros((len(self.fractions), num_classes))
        for row, values in enumerate(self.fractions):
            k = min(num_classes, len(values))
            out[row, :k] = values[:k]
        return out

    def seen_classes(self) -> int:
        return max((len(f) for f in self.fractions), default=0)


def _distribution(values: np.ndarray, quantiles: Sequence[float]) -> Dict[str, object]:
    if values.size == 0:
        return {"mean": None, "quantiles": [None] * len(quantiles), "images_with_class": None}
    return {
        "mean": float(values.mean()),
        "quantiles": [float(v) for v in np.quantile(values, list(quantiles))],
        "images_with_class": float(np.mean(values > 0)),
    }


def class_fraction_comparison(
    real: ClassFractions,
    generated: ClassFractions,
    class_names: Optional[Sequence[str]] = None,
    oil_class: Optional[int] = None,
    quantiles: Iterable[float] = DEFAULT_QUANTILES,
) -> Dict[str, object]:
    """Per class: the per-image fraction's distribution in each set, and their 1-D Wasserstein distance.

    Returns ``{"quantiles", "num_real", "num_generated", "classes", "oil_class", "oil_w1", "per_class":
    {name: {"index", "real": {"mean", "quantiles", "images_with_class"}, "generated": {...}, "w1"}}}``;
    ``w1`` (in units of image fraction, 0..1) is None when a set is empty.
    """
    from scipy.stats import wasserstein_distance  # here: see boundary_band

    quantiles = [float(q) for q in quantiles]
    num_classes = len(class_names) if class_names else max(real.seen_classes(), generated.seen_classes())
    names = list(class_names) if class_names else [f"class {i}" for i in range(num_classes)]
    real_m, gen_m = real.matrix(num_classes), generated.matrix(num_classes)
    per_class = {}
    for index, name in enumerate(names):
        r, g = real_m[:, index], gen_m[:, index]
        per_class[name] = {
            "index": index,
            "real": _distribution(r, quantiles),
            "generated": _distribution(g, quantiles),
            "w1": float(wasserstein_distance(r, g)) if r.size and g.size else None,
        }
    oil = names[oil_class] if oil_class is not None and 0 <= oil_class < num_classes else None
    return {
        "quantiles": quantiles,
        "num_real": real_m.shape[0],
        "num_generated": gen_m.shape[0],
        "classes": names,
        "oil_class": oil_class,
        "oil_w1": per_class[oil]["w1"] if oil is not None else None,
        "per_class": per_class,
    }
