"""SAR-aware statistics of an image set, in plain numpy (the numbers of `dakter quality`).

FID-style scores embed images with a network trained on RGB photographs, which
says little about radar images. These are statistics a SAR analyst would check:

* **speckle** (:func:`speckle_stats`): equivalent number of looks (ENL) and
  coefficient of variation (CV) on homogeneous sea windows;
* **grey-level distribution** (:func:`intensity_histogram`,
  :func:`histogram_distance`): Jensen-Shannon divergence and Wasserstein-1;
* **texture / sharpness** (:func:`radial_power_spectrum`,
  :func:`spectrum_distance`): radially averaged power spectrum;
* **label-image alignment** (:func:`alignment_stats`): oil should be dark
  (damped capillary waves), so the mask must sit on dark pixels;
* **label statistics** (:func:`oil_fraction`).

Each statistic has an accumulator that takes one image at a time; :class:`DatasetStatistics`
runs all of them over one dataset (what :func:`~dakter_hf.evaluation.report.quality_report`
uses to compare a real and a generated set).

Conventions: images are grey with pixel values 0..255 (PIL images, uint8 or
float arrays); masks hold class ids. Every statistic function takes an image
(or mask) sequence: a list of 2-D arrays/PIL images, or a 3-D array (N, H, W).
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
from PIL import Image

from dakter_hf.data.arrays import mask_to_ids, to_grey_array


__all__ = [
    "speckle_stats",
    "intensity_histogram",
    "histogram_distance",
    "radial_power_spectrum",
    "radial_frequencies",
    "spectrum_distance",
    "alignment_stats",
    "oil_fraction",
    "DatasetStatistics",
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


def grey_float(image) -> np.ndarray:
    """One image as float64 grey levels 0..255."""
    return to_grey_array(image).astype(np.float64)


def _pairs(images, masks) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    images = list(_as_sequence(images))
    masks = list(_as_sequence(masks))
    if len(images) != len(masks):
        raise ValueError(f"got {len(images)} images but {len(masks)} masks")
    for index, (image, mask) in enumerate(zip(images, masks)):
        image = grey_float(image)
        ids = mask_to_ids(mask)
        if image.shape != ids.shape:
            raise ValueError(f"image {index} has shape {image.shape} but its mask has shape {ids.shape}")
        yield image, ids


def finite_or_none(value) -> Optional[float]:
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
            "enl_median": finite_or_none(np.median(enl_all)) if enl_all.size else None,
            "cv_median": finite_or_none(np.median(cv_all)) if cv_all.size else None,
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
        histogram.add(grey_float(image))
    return histogram.normalised()


def rebin_histogram(hist: np.ndarray, bins: int) -> np.ndarray:
    """Merge neighbouring bins of a histogram into `bins` bins (which must divide its length)."""
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
        return finite_or_none(np.nansum(power[high]) / total)


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
        image = grey_float(image)
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
            "contrast": finite_or_none(_contrast(mean_outside, mean_inside)),
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
# all of them, over one dataset
# ----------------------------------------------------------------------------


class DatasetStatistics:
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
        """This dataset's part of a quality report; its histogram merged into `js_bins` bins."""
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
            "histogram": [float(v) for v in rebin_histogram(hist, js_bins)],
            "spectrum": [finite_or_none(v) for v in self.spectrum()],
        }
