"""Generation quality without an Inception network: SAR-aware statistics.

FID-style scores embed images with a network trained on RGB photographs, which
says little about radar images. This module instead compares real and generated
SAR datasets on statistics a SAR analyst would check, all in plain numpy:

* **speckle** (:func:`speckle_stats`): equivalent number of looks (ENL) and
  coefficient of variation (CV) on homogeneous sea windows;
* **grey-level distribution** (:func:`intensity_histogram`,
  :func:`histogram_distance`): Jensen-Shannon divergence and Wasserstein-1;
* **texture / sharpness** (:func:`radial_power_spectrum`,
  :func:`spectrum_distance`): radially averaged power spectrum;
* **label-image alignment** (:func:`alignment_stats`): oil should be dark
  (damped capillary waves), so the mask must sit on dark pixels;
* **label statistics** (:func:`oil_fraction`).

:func:`quality_report` runs all of them on a real and a generated dataset and
:func:`format_quality_table` prints the result.

Conventions: images are grey with pixel values 0..255 (PIL images, uint8 or
float arrays); masks hold class ids. Every statistic function takes an image
(or mask) sequence: a list of 2-D arrays/PIL images, or a 3-D array (N, H, W).
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from dakter_hf.data.arrays import is_dataset, iter_image_mask_pairs, mask_to_ids, to_grey_array
from dakter_hf.data.features import class_names_of, oil_class_candidates, oil_class_index
from dakter_hf.utils.markdown import markdown_table

__all__ = [
    "speckle_stats",
    "intensity_histogram",
    "histogram_distance",
    "radial_power_spectrum",
    "radial_frequencies",
    "spectrum_distance",
    "alignment_stats",
    "oil_fraction",
    "quality_report",
    "format_quality_table",
]

GREY_LEVELS = 256  # histogram resolution at which W1 is exact for uint8 images
HIGH_FREQUENCY = 0.25  # cycles/pixel; above it counts as "high frequency"


# ----------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------


def _as_sequence(images) -> Iterable:
    """A single 2-D image, a stack (N, H, W) or any iterable of images -> iterable of images."""
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            return [images]
        if images.ndim == 3:
            return list(images)
        raise ValueError(f"expected images of shape (H, W) or (N, H, W), got {images.shape}")
    if isinstance(images, Image.Image):
        return [images]
    return images


def _grey(image) -> np.ndarray:
    return to_grey_array(image).astype(np.float64)


def _pairs(images, masks) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    images = list(_as_sequence(images))
    masks = list(_as_sequence(masks))
    if len(images) != len(masks):
        raise ValueError(f"got {len(images)} images but {len(masks)} masks")
    for index, (image, mask) in enumerate(zip(images, masks)):
        image = _grey(image)
        ids = mask_to_ids(mask)
        if image.shape != ids.shape:
            raise ValueError(f"image {index} has shape {image.shape} but its mask has shape {ids.shape}")
        yield image, ids


def _float_or_none(value) -> Optional[float]:
    """numpy scalar -> float; NaN/inf -> None (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------------
# speckle: ENL and CV on homogeneous sea windows
# ----------------------------------------------------------------------------


def _speckle_windows(image: np.ndarray, ids: np.ndarray, sea_class: int, window: int):
    """Per-window ENL and CV of one image; returns (enl, cv, number of constant windows)."""
    h, w = (image.shape[0] // window) * window, (image.shape[1] // window) * window
    if h == 0 or w == 0:
        return np.empty(0), np.empty(0), 0
    intensity = image[:h, :w] ** 2  # pixel value read as amplitude
    blocks = intensity.reshape(h // window, window, w // window, window).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(-1, window * window)
    sea = (ids[:h, :w] == sea_class).reshape(h // window, window, w // window, window).all(axis=(1, 3)).reshape(-1)
    blocks = blocks[sea]
    if blocks.shape[0] == 0:
        return np.empty(0), np.empty(0), 0
    mu = blocks.mean(axis=1)
    var = blocks.var(axis=1, ddof=1)
    ok = (mu > 0) & (var > 0)
    mu, var = mu[ok], var[ok]
    return mu**2 / var, np.sqrt(var) / mu, int((~ok).sum())


class _Speckle:
    """Per-tile ENL/CV of sea tiles, gathered one image at a time (see :func:`speckle_stats`)."""

    def __init__(self, sea_class: int, window: int):
        self.sea_class, self.window = sea_class, window
        self.enl: List[np.ndarray] = []
        self.cv: List[np.ndarray] = []
        self.constant = 0

    def add(self, image: np.ndarray, ids: np.ndarray) -> None:
        enl, cv, constant = _speckle_windows(image, ids, self.sea_class, self.window)
        self.enl.append(enl)
        self.cv.append(cv)
        self.constant += constant

    def num_windows(self) -> int:
        return sum(int(e.size) for e in self.enl)

    def summary(self) -> Dict[str, object]:
        enl_all = np.concatenate(self.enl) if self.enl else np.empty(0)
        cv_all = np.concatenate(self.cv) if self.cv else np.empty(0)
        return {
            "enl_median": _float_or_none(np.median(enl_all)) if enl_all.size else None,
            "cv_median": _float_or_none(np.median(cv_all)) if cv_all.size else None,
            "num_windows": int(enl_all.size),
            "num_constant_windows": int(self.constant),
        }


def speckle_stats(images, masks, sea_class: int = 0, window: int = 8) -> Dict[str, object]:
    """Speckle statistics on homogeneous sea: median ENL and median CV.

    Each image is cut into non-overlapping ``window x window`` tiles (a ragged
    right/bottom border is dropped); only tiles whose mask is entirely
    ``sea_class`` are used. The pixel value (0..255) is read as the SAR
    *amplitude*, so the *intensity* is its square. Per tile, with mu and s the
    mean and standard deviation (ddof=1) of the intensity:

    * CV = s / mu (fully developed L-look speckle: 1/sqrt(L)),
    * ENL = mu^2 / s^2 (= L for intensity ~ Gamma(L, mu/L)).

    Tiles with zero mean or zero variance (saturated / constant) are skipped and
    counted. The median over tiles is robust to the odd tile straddling an
    unlabelled feature. Small tiles bias the ENL estimate (upwards, by a few
    per cent at 8x8), identically for real and generated images, so compare the
    two with the same ``window``.

    Returns ``{"enl_median", "cv_median", "num_windows", "num_constant_windows"}``;
    the medians are None when no tile qualifies.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    speckle = _Speckle(sea_class, window)
    for image, ids in _pairs(images, masks):
        speckle.add(image, ids)
    return speckle.summary()


# ----------------------------------------------------------------------------
# grey-level histogram
# ----------------------------------------------------------------------------


def _histogram_counts(image: np.ndarray, bins: int) -> np.ndarray:
    values = np.clip(image, 0.0, 255.0).ravel()
    counts, _ = np.histogram(values, bins=bins, range=(0.0, 256.0))
    return counts.astype(np.float64)


class _Histogram:
    """Pooled grey-level counts, gathered one image at a time (see :func:`intensity_histogram`)."""

    def __init__(self, bins: int):
        self.counts = np.zeros(bins)

    def add(self, image: np.ndarray) -> None:
        self.counts += _histogram_counts(image, len(self.counts))

    def normalised(self) -> np.ndarray:
        total = self.counts.sum()
        if total == 0:
            raise ValueError("cannot build a histogram of zero images")
        return self.counts / total


def intensity_histogram(images, bins: int = 64) -> np.ndarray:
    """Normalised histogram (sums to 1) of the pixel values of all images, pooled.

    ``bins`` equal bins cover the grey levels [0, 256) (values are clipped to
    0..255 first), so with ``bins=256`` each bin is one grey level and with 64
    each holds four. This is the distribution of the displayed pixel value (the
    amplitude, not squared), which is what the generator learns.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    histogram = _Histogram(bins)
    for image in _as_sequence(images):
        histogram.add(_grey(image))
    return histogram.normalised()


def _rebin(hist: np.ndarray, bins: int) -> np.ndarray:
    if len(hist) % bins:
        raise ValueError(f"cannot merge {len(hist)} bins into {bins}")
    return np.asarray(hist).reshape(bins, -1).sum(axis=1)


def histogram_distance(h1, h2) -> Dict[str, float]:
    """Distances between two histograms from :func:`intensity_histogram` (same bins).

    * ``js``: Jensen-Shannon divergence, log base 2, so 0 (identical) .. 1
      (disjoint supports).
    * ``w1``: Wasserstein-1 (earth mover's) distance between the two
      grey-level distributions, in grey levels / 255 (0 .. ~1): the integral of
      |CDF1 - CDF2|. Mass is placed at the bin centres, so the value is exact for
      integer grey levels with 256 bins and within one bin width otherwise.

    Returns ``{"js", "w1"}``.
    """
    p = np.asarray(h1, dtype=np.float64)
    q = np.asarray(h2, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"histograms must be 1-D with the same number of bins, got {p.shape} and {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("histograms must have positive mass")
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    js = min(max(0.5 * kl(p) + 0.5 * kl(q), 0.0), 1.0)
    bin_width = (256.0 / len(p)) / 255.0
    w1 = float(np.sum(np.abs(np.cumsum(p) - np.cumsum(q))) * bin_width)
    return {"js": js, "w1": w1}


# ----------------------------------------------------------------------------
# radially averaged power spectrum
# ----------------------------------------------------------------------------

_RADIUS_CACHE: Dict[Tuple[int, int, int], np.ndarray] = {}


def _radius_bins(shape: Tuple[int, int], num_bins: int) -> np.ndarray:
    """Bin index (1..num_bins, 0 = DC or beyond) of every DFT frequency of an (H, W) image."""
    key = (shape[0], shape[1], num_bins)
    if key not in _RADIUS_CACHE:
        fy = np.fft.fftfreq(shape[0])[:, None]
        fx = np.fft.fftfreq(shape[1])[None, :]
        radius = np.sqrt(fy**2 + fx**2)  # cycles / pixel
        index = np.floor(radius / (0.5 / num_bins) + 0.5).astype(np.int64)
        index[index > num_bins] = 0  # corners beyond Nyquist radius are left out
        if len(_RADIUS_CACHE) > 16:
            _RADIUS_CACHE.clear()
        _RADIUS_CACHE[key] = index
    return _RADIUS_CACHE[key]


def _spectrum_sums(image: np.ndarray, num_bins: int) -> Tuple[np.ndarray, np.ndarray]:
    x = image / 127.5 - 1.0
    x = x - x.mean()
    power = np.abs(np.fft.fft2(x)) ** 2 / x.size
    index = _radius_bins(x.shape, num_bins).ravel()
    sums = np.bincount(index, weights=power.ravel(), minlength=num_bins + 1)[1:]
    counts = np.bincount(index, minlength=num_bins + 1)[1:].astype(np.float64)
    return sums, counts


class _Spectrum:
    """Radial power sums and sample counts, gathered one image at a time (see :func:`radial_power_spectrum`)."""

    def __init__(self, num_bins: int):
        self.num_bins = num_bins
        self.sums = np.zeros(num_bins)
        self.counts = np.zeros(num_bins)

    def add(self, image: np.ndarray) -> None:
        sums, counts = _spectrum_sums(image, self.num_bins)
        self.sums += sums
        self.counts += counts

    def spectrum(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)

    def high_frequency_fraction(self) -> Optional[float]:
        """Share of the (non-DC) power above HIGH_FREQUENCY cycles/pixel."""
        power = self.spectrum() * self.counts
        total = np.nansum(power)
        if not total > 0:
            return None
        high = radial_frequencies(self.num_bins) > HIGH_FREQUENCY
        return _float_or_none(np.nansum(power[high]) / total)


def radial_frequencies(num_bins: int) -> np.ndarray:
    """Centre frequency (cycles/pixel) of each bin of :func:`radial_power_spectrum`."""
    return np.arange(1, num_bins + 1) * (0.5 / num_bins)


def radial_power_spectrum(images, num_bins: Optional[int] = None) -> np.ndarray:
    """Radially averaged power spectrum, averaged over images; shape (num_bins,).

    Each image is scaled to [-1, 1] (value / 127.5 - 1) and its mean removed;
    the power is |DFT|^2 / (H W), so zero-mean white noise of variance v has a
    flat spectrum at level v whatever the image size. Frequencies are radii in
    cycles/pixel; bin k (k = 1..num_bins) is centred on k * 0.5 / num_bins (see
    :func:`radial_frequencies`) and one bin wide, so for an N x N image with the
    default ``num_bins = min(H, W) // 2`` of the first image the bins are the
    integer radii 1..N/2. DC and the corners beyond 0.5 cycles/pixel are left
    out. Power is pooled over all frequency samples of all images (equal weight
    per image when they share a size); a bin no image reaches is NaN.
    """
    images = list(_as_sequence(images))
    if not images:
        raise ValueError("cannot compute the spectrum of zero images")
    spectrum = None
    for image in images:
        image = _grey(image)
        if spectrum is None:
            spectrum = _Spectrum(num_bins if num_bins is not None else max(1, min(image.shape) // 2))
        spectrum.add(image)
    return spectrum.spectrum()


def spectrum_distance(s1, s2) -> float:
    """Mean absolute difference of log10 spectra: mean_k |log10 s1[k] - log10 s2[k]|.

    In decades: 0 = identical; scaling the image contrast by a gives
    2 |log10 a| (0.3 = a factor 2 in power everywhere). Bins that are not finite
    and positive in both spectra are ignored; NaN if none is left.
    """
    a = np.asarray(s1, dtype=np.float64)
    b = np.asarray(s2, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"spectra must have the same bins, got shapes {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    if not ok.any():
        return float("nan")
    return float(np.mean(np.abs(np.log10(a[ok]) - np.log10(b[ok]))))


# ----------------------------------------------------------------------------
# label-image alignment and label statistics
# ----------------------------------------------------------------------------


def _alignment_one(image: np.ndarray, ids: np.ndarray, oil_class: int):
    """(inside mean or None, outside mean or None) of one image, brightness in 0..1."""
    oil = ids == oil_class
    n_oil = int(oil.sum())
    inside = float(image[oil].mean()) / 255.0 if n_oil else None
    outside = float(image[~oil].mean()) / 255.0 if n_oil < oil.size else None
    return inside, outside


def _contrast(outside: Optional[float], inside: Optional[float]) -> Optional[float]:
    if outside is None or inside is None or outside + inside <= 0:
        return None
    return (outside - inside) / (outside + inside)


class _Alignment:
    """Per-image brightness inside/outside oil, gathered one image at a time (see :func:`alignment_stats`)."""

    def __init__(self, oil_class: int):
        self.oil_class = oil_class
        self.num_images = 0
        self.inside: List[float] = []
        self.outside: List[float] = []
        self.paired: List[float] = []

    def add(self, image: np.ndarray, ids: np.ndarray) -> None:
        inside, outside = _alignment_one(image, ids, self.oil_class)
        self.num_images += 1
        if inside is not None:
            self.inside.append(inside)
        if outside is not None:
            self.outside.append(outside)
        contrast = _contrast(outside, inside)
        if contrast is not None:
            self.paired.append(contrast)

    def summary(self) -> Dict[str, object]:
        mean_inside = float(np.mean(self.inside)) if self.inside else None
        mean_outside = float(np.mean(self.outside)) if self.outside else None
        return {
            "mean_inside": mean_inside,
            "mean_outside": mean_outside,
            "contrast": _float_or_none(_contrast(mean_outside, mean_inside)),
            "contrast_paired": float(np.mean(self.paired)) if self.paired else None,
            "num_images": int(self.num_images),
            "num_images_with_oil": len(self.inside),
        }


class _OilFraction:
    """Per-mask fraction of oil pixels, gathered one mask at a time (see :func:`oil_fraction`)."""

    def __init__(self, oil_class: int):
        self.oil_class = oil_class
        self.fractions: List[float] = []

    def add(self, ids: np.ndarray) -> None:
        self.fractions.append(float(np.mean(ids == self.oil_class)))

    def summary(self) -> Dict[str, object]:
        if not self.fractions:
            return {"oil_pixel_fraction": None, "images_with_oil_fraction": None, "num_images": 0}
        return {
            "oil_pixel_fraction": float(np.mean(self.fractions)),
            "images_with_oil_fraction": float(np.mean([f > 0 for f in self.fractions])),
            "num_images": len(self.fractions),
        }


def alignment_stats(images, masks, oil_class: int = 1) -> Dict[str, object]:
    """Do the oil labels sit on dark pixels? Brightness inside vs outside oil.

    Brightness is the pixel value / 255 (0..1). Per image, the mean brightness
    inside the oil pixels and outside them (all other classes) is taken; then

    * ``mean_inside``: mean over the images that have oil pixels
      (``num_images_with_oil`` of them; the others are skipped),
    * ``mean_outside``: mean over the images that have non-oil pixels,
    * ``contrast`` = (mean_outside - mean_inside) / (mean_outside + mean_inside),
      in -1..1, positive when oil is darker than its surroundings, as it is in
      SAR; near 0 means the labels ignore the image,
    * ``contrast_paired``: mean over images holding both oil and non-oil pixels
      of the same contrast computed within the image (insensitive to
      brightness differing between images).

    Returns ``{"mean_inside", "mean_outside", "contrast", "contrast_paired",
    "num_images", "num_images_with_oil"}``; values that cannot be computed are None.
    """
    alignment = _Alignment(oil_class)
    for image, ids in _pairs(images, masks):
        alignment.add(image, ids)
    return alignment.summary()


def oil_fraction(masks, oil_class: int = 1) -> Dict[str, object]:
    """Label statistics: how much oil the masks hold.

    Returns ``{"oil_pixel_fraction", "images_with_oil_fraction", "num_images"}``:
    the mean over images of the fraction of pixels labelled ``oil_class``, and
    the fraction of images with at least one oil pixel (None for zero masks).
    """
    fraction = _OilFraction(oil_class)
    for mask in _as_sequence(masks):
        fraction.add(mask_to_ids(mask))
    return fraction.summary()


# ----------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------


class _Accumulator:
    """All statistics of one dataset, updated one (image, mask) pair at a time."""

    def __init__(self, oil_class: int, sea_class: int, window: int, num_bins: int):
        self.n = 0
        self.sizes: Dict[Tuple[int, int], int] = {}
        self.speckle = _Speckle(sea_class, window)
        self.hist = _Histogram(GREY_LEVELS)
        self.spec = _Spectrum(num_bins)
        self.alignment = _Alignment(oil_class)
        self.oil = _OilFraction(oil_class)

    def add(self, image: np.ndarray, ids: np.ndarray) -> None:
        self.n += 1
        self.sizes[image.shape] = self.sizes.get(image.shape, 0) + 1
        self.speckle.add(image, ids)
        self.hist.add(image)
        self.spec.add(image)
        self.alignment.add(image, ids)
        self.oil.add(ids)

    def histogram(self) -> np.ndarray:
        return self.hist.normalised()

    def spectrum(self) -> np.ndarray:
        return self.spec.spectrum()

    def result(self, js_bins: int) -> Dict[str, object]:
        hist = self.histogram()
        levels = np.arange(GREY_LEVELS) + 0.5  # bin centres, grey levels
        mean = float(np.sum(hist * levels))
        std = float(np.sqrt(max(np.sum(hist * (levels - mean) ** 2), 0.0)))
        speckle = self.speckle.summary()
        alignment = self.alignment.summary()
        oil = self.oil.summary()
        sizes = sorted(self.sizes.items(), key=lambda kv: -kv[1])
        return {
            "num_images": self.n,
            "image_size": list(sizes[0][0]) if len(sizes) == 1 else "mixed",
            "brightness_mean": mean / 255.0,
            "brightness_std": std / 255.0,
            "enl_median": speckle["enl_median"],
            "cv_median": speckle["cv_median"],
            "speckle_windows": speckle["num_windows"],
            "speckle_constant_windows": speckle["num_constant_windows"],
            "oil_mean_inside": alignment["mean_inside"],
            "oil_mean_outside": alignment["mean_outside"],
            "oil_contrast": alignment["contrast"],
            "oil_contrast_paired": alignment["contrast_paired"],
            "images_with_oil": alignment["num_images_with_oil"],
            "oil_pixel_fraction": oil["oil_pixel_fraction"],
            "images_with_oil_fraction": oil["images_with_oil_fraction"],
            "high_freq_power_fraction": self.spec.high_frequency_fraction(),
            "histogram": [float(v) for v in _rebin(hist, js_bins)],
            "spectrum": [_float_or_none(v) for v in self.spectrum()],
        }


def _unwrap_dataset(data, name: str, notes: List[str]):
    """A DatasetDict -> its train split (or its only split)."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        return data
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
        window: speckle tile size (see :func:`speckle_stats`).
        bins: histogram bins for the Jensen-Shannon divergence (must divide 256).

    Real images whose size differs from the first generated image's are resized
    to it (bilinear image, nearest mask, PIL), which is noted: the resizing
    averages speckle, so the real ENL is that of the resized images (which is
    what a model trained at that resolution sees). Everything is accumulated one
    image at a time; only the per-tile speckle values are kept until the end.

    Returns ``{"real": {...}, "generated": {...}, "distance": {"histogram_js",
    "histogram_w1", "spectrum_log10_mad"}, "notes": [...], "num_real",
    "num_generated", "oil_class", "sea_class", "class_names", "settings"}``.
    Per-dataset keys: see :func:`format_quality_table` rows plus ``histogram``
    (``bins`` probabilities) and ``spectrum`` (power per radial bin, bin
    centres from :func:`radial_frequencies`).
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
    first = _grey(first_image)
    target_hw = first.shape
    num_bins = max(1, min(target_hw) // 2)

    def progress(iterable, total, desc):
        if not show_progress:
            return iterable

        return tqdm(iterable, total=total, desc=desc)

    gen_acc = _Accumulator(oil_class, sea_class, window, num_bins)
    gen_acc.add(first, mask_to_ids(first_mask))
    total_gen = len(generated) - 1 if hasattr(generated, "__len__") else None
    for image, mask in progress(gen_iter, total_gen, "quality: generated"):
        image, ids = _grey(image), mask_to_ids(mask)
        if image.shape != ids.shape:
            raise ValueError(f"a generated image has shape {image.shape} but its mask {ids.shape}")
        gen_acc.add(image, ids)

    real_acc = _Accumulator(oil_class, sea_class, window, num_bins)
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
        real_acc.add(_grey(pil_image), mask_to_ids(pil_mask))
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
        notes.append(f"{real_acc.n} real vs {gen_acc.n} generated images; the statistics are per-dataset means/medians")
    for name, acc in (("real", real_acc), ("generated", gen_acc)):
        if not acc.alignment.inside:
            notes.append(f"{name}: no image holds oil (class {oil_class}); inside-oil brightness undefined")
        if not acc.speckle.num_windows():
            notes.append(f"{name}: no {window}x{window} tile lies entirely in sea (class {sea_class}); ENL/CV undefined")

    hist_real, hist_gen = real_acc.histogram(), gen_acc.histogram()
    w1 = histogram_distance(hist_real, hist_gen)["w1"]
    js = histogram_distance(_rebin(hist_real, bins), _rebin(hist_gen, bins))["js"]
    return {
        "real": real_acc.result(bins),
        "generated": gen_acc.result(bins),
        "distance": {
            "histogram_js": _float_or_none(js),
            "histogram_w1": _float_or_none(w1),
            "spectrum_log10_mad": _float_or_none(spectrum_distance(real_acc.spectrum(), gen_acc.spectrum())),
        },
        "notes": notes,
        "num_real": real_acc.n,
        "num_generated": gen_acc.n,
        "oil_class": int(oil_class),
        "sea_class": int(sea_class),
        "class_names": names,
        "settings": {"window": int(window), "bins": int(bins), "spectrum_bins": int(num_bins),
                     "w1_bins": GREY_LEVELS, "max_images": max_images},
    }


# rows of the table: (key in the per-dataset dict, label)
_TABLE_ROWS = [
    ("num_images", "images"),
    ("image_size", "image size (HxW)"),
    ("brightness_mean", "brightness mean (0..1)"),
    ("brightness_std", "brightness std (0..1)"),
    ("enl_median", "speckle ENL (median, sea)"),
    ("cv_median", "speckle CV (median, sea)"),
    ("speckle_windows", "sea tiles used"),
    ("high_freq_power_fraction", "power above 0.25 cyc/px"),
    ("oil_pixel_fraction", "oil pixel fraction"),
    ("images_with_oil_fraction", "fraction of images with oil"),
    ("oil_mean_inside", "brightness inside oil"),
    ("oil_mean_outside", "brightness outside oil"),
    ("oil_contrast", "oil contrast (out-in)/(out+in)"),
    ("oil_contrast_paired", "oil contrast, per image"),
]

_DISTANCE_ROWS = [
    ("histogram_js", "histogram Jensen-Shannon (0..1)"),
    ("histogram_w1", "histogram Wasserstein-1 (/255)"),
    ("spectrum_log10_mad", "spectrum mean abs. diff. of log10"),
]


def _format_value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    return str(value)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """Fixed width: the label column first, then right-aligned numbers."""
    return markdown_table(header, rows, align=[None] + ["right"] * (len(header) - 1), pad=True)


def format_quality_table(report: Dict[str, object]) -> str:
    """Fixed-width markdown table of a :func:`quality_report` result.

    One row per statistic with columns real | generated, then a second table of
    the real-vs-generated distances, then the notes as a bullet list.
    """
    return format_quality_comparison({"generated": report})


def format_quality_comparison(reports: Dict[str, Dict[str, object]]) -> str:
    """Several generated sets against the same real data: columns real | <name> | ...

    The real column comes from the first report (each was computed on the same real images).
    """
    names = list(reports)
    real = reports[names[0]].get("real", {})
    generated = [reports[name].get("generated", {}) for name in names]
    rows = [
        [label, _format_value(real.get(key))] + [_format_value(gen.get(key)) for gen in generated]
        for key, label in _TABLE_ROWS
        if key in real or any(key in gen for gen in generated)
    ]
    lines = _markdown_table(["statistic", "real"] + names, rows)
    distances = [reports[name].get("distance", {}) for name in names]
    drows = [[label] + [_format_value(d.get(key)) for d in distances] for key, label in _DISTANCE_ROWS if any(key in d for d in distances)]
    if drows:
        header = ["distance (real vs generated)"] + (names if len(names) > 1 else ["value"])
        lines += [""] + _markdown_table(header, drows)
    notes = [(name, note) for name in names for note in reports[name].get("notes") or []]
    if notes:
        lines += ["", "Notes:"] + [f"- {note}" if len(names) == 1 else f"- {name}: {note}" for name, note in notes]
    return "\n".join(lines)
