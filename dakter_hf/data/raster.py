"""SAR-native image files (8/16-bit PNG and TIFF, float32 GeoTIFF) to the 8-bit grey the models use.

Real SAR products are mostly 16-bit or float32 (sigma0 in linear power or in dB). Nothing
here clips or wraps silently: a file is read in its own dtype, then mapped to 0..255 by a
documented `Normalization`, which is recorded wherever data are written (dataset card,
marker, pipeline and student configs) so training, generation and segmentation apply the
same mapping.

Defaults (`Normalization()`):
  * 8-bit files are used as stored (RGB reduced to grey with PIL's ITU-R 601 luma);
  * 16-bit, 32-bit and float files: `intensity="linear"` (values as stored), then the
    1st..99th percentile of the finite pixels is stretched to 0..255 and clipped.
`intensity="db"` first converts linear power to decibels, 10 log10(max(v, 1e-10)); use it
for linear sigma0, which is too skewed for a linear stretch. `clip_percentiles` applies to
every file when given explicitly (also 8-bit ones).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from dakter_hf.errors import DataError
from dakter_hf.utils.ownership import read_marker

DEFAULT_PERCENTILES = (1.0, 99.0)
INTENSITIES = ("linear", "db")
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")  # what the loaders and `dakter segment` read


def read_image(path: str, convert: Callable[[Image.Image], object]):
    """Open an image file and apply `convert`; a DataError naming the file if it cannot be read."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            return convert(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: cannot read this file as an image ({error})") from error


def read_rgb(path: str) -> np.ndarray:
    """Read an image file as uint8 (H, W, 3)."""
    return read_image(path, lambda image: np.asarray(image.convert("RGB")))


@dataclass(frozen=True)
class Normalization:
    """How raw pixel values become grey 0..255 (see the module docstring for the defaults)."""

    intensity: str = "linear"
    clip_percentiles: Optional[Tuple[float, float]] = None

    def __post_init__(self):
        if self.intensity not in INTENSITIES:
            raise ValueError(f"--intensity must be one of {INTENSITIES}, got {self.intensity!r}")
        if self.clip_percentiles is not None:
            low, high = (float(v) for v in self.clip_percentiles)
            if not 0 <= low < high <= 100:
                raise ValueError(f"--clip-percentiles must be LOW,HIGH with 0 <= LOW < HIGH <= 100, got {self.clip_percentiles}")
            object.__setattr__(self, "clip_percentiles", (low, high))

    @classmethod
    def from_options(cls, intensity: str = "linear", clip_percentiles: Optional[str] = None) -> "Normalization":
        """From command-line strings: `--intensity db --clip-percentiles 2,98`."""
        clip = None
        if clip_percentiles not in (None, "", "default"):
            try:
                clip = tuple(float(v) for v in str(clip_percentiles).split(","))
            except ValueError:
                raise ValueError(f"--clip-percentiles must be LOW,HIGH (e.g. 1,99), got {clip_percentiles!r}") from None
            if len(clip) != 2:
                raise ValueError(f"--clip-percentiles must be LOW,HIGH (e.g. 1,99), got {clip_percentiles!r}")
        return cls(intensity=intensity, clip_percentiles=clip)

    @classmethod
    def from_dict(cls, record: dict) -> "Normalization":
        """From what `to_dict` recorded (a marker, a pipeline or student config)."""
        clip = record.get("clip_percentiles")
        return cls(intensity=record.get("intensity", "linear"), clip_percentiles=tuple(clip) if clip else None)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["clip_percentiles"] = list(self.clip_percentiles) if self.clip_percentiles else None
        record["default_clip_for_non_8bit"] = list(DEFAULT_PERCENTILES)
        return record

    def describe(self) -> str:
        clip = f"{self.clip_percentiles[0]:g}-{self.clip_percentiles[1]:g} percentile stretch" if self.clip_percentiles else f"8-bit as stored, other depths {DEFAULT_PERCENTILES[0]:g}-{DEFAULT_PERCENTILES[1]:g} percentile stretch"
        return f"intensity {self.intensity}, {clip}"


def read_raster(path: str) -> np.ndarray:
    """A file's pixels in their own dtype: (H, W) or (H, W, C). TIFF through tifffile, others through PIL."""

    if path.lower().endswith(TIFF_SUFFIXES):
        import tifffile

        try:
            array = tifffile.imread(path)
        except Exception as error:  # tifffile raises several kinds for damaged files
            raise DataError(f"{path}: cannot read this TIFF ({type(error).__name__}: {error})") from None
        array = np.asarray(array)
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = np.moveaxis(array, 0, -1)  # bands first -> bands last
        if array.ndim not in (2, 3):
            raise DataError(f"{path}: expected a 2-D image (optionally with bands), got shape {array.shape}")
        return array

    def convert(image: Image.Image) -> np.ndarray:
        if image.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(image).astype(np.uint16)
        if image.mode in ("I", "F"):
            return np.asarray(image)
        if image.mode in ("L", "RGB"):
            return np.asarray(image)
        return np.asarray(image.convert("RGB"))

    return read_image(path, convert)


def to_single_band(array: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W): grey luma for 8-bit RGB(A), the first band otherwise (SAR bands are not colours)."""
    if array.ndim == 2:
        return array
    if array.shape[-1] == 1:
        return array[..., 0]
    if array.dtype == np.uint8 and array.shape[-1] in (3, 4):
        return np.asarray(Image.fromarray(np.ascontiguousarray(array[..., :3])).convert("L"))
    return array[..., 0]


def normalize_to_uint8(array: np.ndarray, normalization: Normalization = Normalization(), where: str = "image") -> np.ndarray:
    """One band of any dtype -> uint8 grey, as `normalization` says (never a silent wrap or clip)."""

    band = to_single_band(np.asarray(array))
    if band.dtype == np.uint8 and normalization.clip_percentiles is None and normalization.intensity == "linear":
        return band
    values = band.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        raise DataError(f"{where}: no finite pixel values")
    if normalization.intensity == "db":
        if (values[finite] < 0).any():
            raise DataError(f"{where}: --intensity db expects linear power (>= 0), found negative values (already in dB? use --intensity linear)")
        values = 10.0 * np.log10(np.maximum(values, 1e-10))
    low_p, high_p = normalization.clip_percentiles or DEFAULT_PERCENTILES
    low, high = np.percentile(values[finite], [low_p, high_p])
    if high <= low:
        high = low + 1.0  # a constant image maps to 0
    scaled = (values - low) / (high - low) * 255.0
    scaled[~finite] = 0.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def read_sar_grey(path: str, normalization: Optional[Normalization] = None) -> np.ndarray:
    """Read an image file of any depth as uint8 grey (H, W)."""
    return normalize_to_uint8(read_raster(path), normalization or Normalization(), where=path)


def read_mask_ids(path: str) -> np.ndarray:
    """A mask whose pixel values are class ids, as int64, with no wrap-around.

    Palette (P) PNGs give their palette indices, grey and 16-bit masks their values, RGB(A)
    masks one grey channel (PIL's luma), TIFF masks their first band.
    """

    if path.lower().endswith(TIFF_SUFFIXES):
        array = read_raster(path)
        array = array[..., 0] if array.ndim == 3 else array
    else:
        def ids(image: Image.Image) -> np.ndarray:
            if image.mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1", "F"):
                return np.asarray(image)
            return np.asarray(image.convert("L"))

        array = read_image(path, ids)
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"{path}: mask values must be whole class ids, found non-integer values")
    return array.astype(np.int64)


def normalization_for(spec: str, intensity: str = "linear", clip_percentiles=None) -> Normalization:
    """The normalisation of a data source: what a `dakter data` folder recorded, else the given options."""

    marker = read_marker(spec) if os.path.isdir(spec) else None
    recorded = (marker or {}).get("settings", {}).get("normalization")
    if recorded:
        return Normalization.from_dict(recorded)
    if isinstance(clip_percentiles, (list, tuple)):
        return Normalization(intensity=intensity, clip_percentiles=tuple(clip_percentiles))
    return Normalization.from_options(intensity, clip_percentiles)
