"""The one SAR raster reader: image files (8/16-bit PNG and TIFF, float32 GeoTIFF) to the 8-bit grey the models use.

`dakter data` (the loaders), `dakter segment` and the Space all read pixels here, so one
file gives one grey image and one valid-pixel mask everywhere.

Reading (`read_raster`): the header's size is checked first (`check_pixels`, the one
pixel-limit check), then the pixels are decoded in their own dtype, bands last. TIFFs
(recognised by their magic bytes) go through tifffile, whose axes say the band order
(bands-first and bands-last files both work), and keep their GeoTIFF tags
(`dakter_hf.data.geotiff`); other files go through PIL.

No-data (`valid_pixels`): non-finite values and the GDAL_NODATA value of the first band
take no part in the percentile stretch and become 0 in the grey image; `read_grey`
reports them as a mask (what `dakter segment` and the Space use: such pixels are left out).
`read_sar_grey`, the loaders' entry (`dakter data`), refuses an image with any no-data pixel,
naming the file and the count (`NODATA_POLICY`, recorded in every dataset's marker and card).

Nothing here clips or wraps silently: the pixels are mapped to 0..255 by a documented
`Normalization`, which is recorded wherever data are written (dataset card, marker,
pipeline and student configs) so training, generation and segmentation apply the same mapping.

Defaults (`Normalization()`):
  * 8-bit files are used as stored (RGB reduced to grey with PIL's ITU-R 601 luma);
  * 16-bit, 32-bit and float files: `intensity="linear"` (values as stored), then the
    1st..99th percentile of the valid pixels is stretched to 0..255 and clipped.
`intensity="db"` first converts linear power to decibels, 10 log10(max(v, 1e-10)); use it
for linear sigma0, which is too skewed for a linear stretch. `clip_percentiles` applies to
every file when given explicitly (also 8-bit ones).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from dakter_hf.data.geotiff import TIFF_MAGIC, Tag, nodata_value, read_tiff
from dakter_hf.errors import DataError, PixelLimitError, RasterError
from dakter_hf.utils.ownership import read_marker


DEFAULT_PERCENTILES = (1.0, 99.0)
INTENSITIES = ("linear", "db")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")  # what the loaders and `dakter segment` read
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NODATA_ID = 255  # class id that `dakter segment` and the Space write at no-data pixels
# The one pixel limit of `dakter segment` and the Space (their `--max-pixels` default): 16.8 Mpixel, a
# 4096 x 4096 scene, takes ~1-2 GB and about a minute on a 2-vCPU Space; a header above it is refused unread
DEFAULT_MAX_PIXELS = 4096 * 4096


def check_pixels(height: int, width: int, max_pixels: Optional[int], where: str = "image") -> None:
    """Refuse an empty image, or one above `max_pixels`, from its size alone: before any pixel is decoded."""
    if height < 1 or width < 1:
        raise PixelLimitError(where, f"empty size {height}x{width} (height x width)", height, width, max_pixels)
    if max_pixels is not None and height * width > max_pixels:
        reason = f"{height}x{width} (height x width) = {height * width} pixels, above the limit of {max_pixels} pixels"
        raise PixelLimitError(where, reason, height, width, max_pixels)


def read_image(path: str, convert: Callable[[Image.Image], object]):
    """Open an image file and apply `convert`; a DataError naming the file if it cannot be read."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as image:
            return convert(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
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
                raise ValueError(
                    f"--clip-percentiles must be LOW,HIGH with 0 <= LOW < HIGH <= 100, got {self.clip_percentiles}"
                )
            object.__setattr__(self, "clip_percentiles", (low, high))

    @classmethod
    def from_options(cls, intensity: str = "linear", clip_percentiles: Optional[str] = None) -> "Normalization":
        """From command-line strings: `--intensity db --clip-percentiles 2,98`."""
        clip = None
        if clip_percentiles not in (None, "", "default"):
            try:
                clip = tuple(float(v) for v in str(clip_percentiles).split(","))
            except ValueError:
                clip = ()  # not numbers: the same message as a wrong count
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
        if self.clip_percentiles:
            clip = f"{self.clip_percentiles[0]:g}-{self.clip_percentiles[1]:g} percentile stretch"
        else:
            low, high = DEFAULT_PERCENTILES
            clip = f"8-bit as stored, other depths {low:g}-{high:g} percentile stretch"
        return f"intensity {self.intensity}, {clip}"


@dataclass
class Raster:
    """A file's pixels in their own dtype, bands last, and the GeoTIFF tags it carries."""

    pixels: np.ndarray  # (H, W) or (H, W, bands)
    kind: str  # the decoder's format name: "TIFF", "PNG", "JPEG", ...
    tags: Dict[int, Tag] = field(default_factory=dict)  # georeferencing and GDAL_NODATA tags by code (TIFF only)

    @property
    def nodata(self) -> Optional[float]:
        """The GDAL_NODATA value (NaN allowed), None where the file gives none."""
        return nodata_value(self.tags)


def read_raster(path: str, max_pixels: Optional[int] = None, where: Optional[str] = None) -> Raster:
    """A file's pixels (`Raster`), refused from its header if it has more than `max_pixels`.

    TIFFs (by their magic bytes) through tifffile, bands ordered by its axes; others through PIL.
    Errors are `RasterError`s naming `where` (default: the path).
    """

    where = where or path
    if not os.path.isfile(path):
        raise RasterError(where, "file not found")
    with open(path, "rb") as handle:
        head = handle.read(24)
    if head[:4] in TIFF_MAGIC:
        pixels, tags = read_tiff(path, where, lambda height, width: check_pixels(height, width, max_pixels, where))
        return Raster(pixels, "TIFF", tags)
    if head.startswith(PNG_MAGIC):  # the exact size from IHDR, even where PIL would refuse first
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise RasterError(where, "cannot read this PNG: its header is damaged")
        check_pixels(int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big"), max_pixels, where)
    return _read_pil(path, max_pixels, where)


def pil_pixels(image: Image.Image) -> np.ndarray:
    """A PIL image's pixels in their own depth: 16-bit as uint16, I/F/L/RGB as stored, other modes as RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(image).astype(np.uint16)
    if image.mode in ("I", "F", "L", "RGB"):
        return np.asarray(image)
    return np.asarray(image.convert("RGB"))  # palette, grey + alpha, CMYK, ...: as PIL shows them


def _read_pil(path: str, max_pixels: Optional[int], where: str) -> Raster:
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:  # PIL refuses far above any limit of ours, before we see the size
        reason = f"larger than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, which PIL refuses to decode"
        raise PixelLimitError(where, reason, None, None, max_pixels) from None
    except Exception as error:  # untrusted bytes: any decoder failure is an unreadable file
        raise RasterError(where, f"cannot read this file as an image ({type(error).__name__}: {error})") from None
    with image:
        check_pixels(image.height, image.width, max_pixels, where)
        kind = image.format or "image"
        try:
            image.load()
            pixels = pil_pixels(image)
        except Exception as error:
            reason = f"cannot decode this {kind} file; it may be truncated or corrupt"
            raise RasterError(where, f"{reason} ({type(error).__name__}: {error})") from None
    return Raster(pixels, kind)


def valid_pixels(pixels: np.ndarray, nodata: Optional[float] = None) -> np.ndarray:
    """(H, W) bool, False where the first band is non-finite or equals the no-data value."""
    first = pixels[..., 0] if pixels.ndim == 3 else pixels
    valid = np.isfinite(first) if first.dtype.kind == "f" else np.ones(first.shape, dtype=bool)
    if nodata is not None and not math.isnan(nodata):
        valid &= first != nodata
    return valid


def to_single_band(array: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W): grey luma for 8-bit RGB(A), the first band otherwise (SAR bands are not colours)."""
    if array.ndim == 2:
        return array
    if array.shape[-1] == 1:
        return array[..., 0]
    if array.dtype == np.uint8 and array.shape[-1] in (3, 4):
        return np.asarray(Image.fromarray(np.ascontiguousarray(array[..., :3])).convert("L"))
    return array[..., 0]


def normalize_to_uint8(
    array: np.ndarray,
    normalization: Normalization = Normalization(),
    where: str = "image",
    valid: Optional[np.ndarray] = None,
) -> np.ndarray:
    """One band of any dtype -> uint8 grey, as `normalization` says (never a silent wrap or clip).

    Pixels outside `valid` (default: the non-finite ones) take no part in the stretch and become 0.
    """

    band = to_single_band(np.asarray(array))
    if band.dtype == np.uint8 and normalization.clip_percentiles is None and normalization.intensity == "linear":
        return band if valid is None or valid.all() else np.where(valid, band, 0).astype(np.uint8)
    values = band.astype(np.float64)
    used = np.isfinite(values) if valid is None else valid & np.isfinite(values)
    if not used.any():
        raise DataError(f"{where}: no valid pixel values (all are NaN, infinite or the file's no-data value)")
    if normalization.intensity == "db":
        if (values[used] < 0).any():
            raise DataError(
                f"{where}: --intensity db expects linear power (>= 0), found negative values "
                "(already in dB? use --intensity linear)"
            )
        values = 10.0 * np.log10(np.maximum(values, 1e-10))
    low_p, high_p = normalization.clip_percentiles or DEFAULT_PERCENTILES
    low, high = np.percentile(values[used], [low_p, high_p])
    if high <= low:
        high = low + 1.0  # a constant image maps to 0
    scaled = (values - low) / (high - low) * 255.0
    scaled[~used] = 0.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


@dataclass
class Grey:
    """A file as the students see it: uint8 grey, which pixels hold data, and the raster it came from."""

    image: np.ndarray  # (H, W) uint8, 0 at no-data pixels
    valid: np.ndarray  # (H, W) bool, False at no-data pixels (NaN, infinite, the GDAL_NODATA value)
    raster: Raster


def read_grey(
    path: str,
    normalization: Optional[Normalization] = None,
    max_pixels: Optional[int] = None,
    where: Optional[str] = None,
) -> Grey:
    """Read a file of any depth and band layout as grey + valid mask (what `dakter segment` and the Space use)."""

    raster = read_raster(path, max_pixels, where)
    valid = valid_pixels(raster.pixels, raster.nodata)
    image = normalize_to_uint8(raster.pixels, normalization or Normalization(), where or path, valid)
    return Grey(np.ascontiguousarray(image), valid, raster)


NODATA_POLICY = (
    "an image with no-data pixels (NaN, infinite, or the file's GDAL_NODATA value) is refused, naming the file "
    "and the count; every image of the dataset holds data at every pixel"
)


def read_sar_grey(path: str, normalization: Optional[Normalization] = None) -> np.ndarray:
    """Read an image file of any depth as uint8 grey (H, W): the loaders' entry (`dakter data`).

    No-data pixels (non-finite, or equal to the GDAL_NODATA value; the same test as `read_grey`,
    so the Space and `dakter segment` agree on which pixels they are) are refused, with a
    `DataError` naming the file and the count (`NODATA_POLICY`). Why refused and not kept: in
    a dataset they would become grey 0, black, which is what oil looks like, and their mask
    pixels would still carry a class. The students could ignore them (label 255, IGNORE_INDEX),
    but the joint diffusion model, Eq. 9's class statistics, the `classes` column and generation
    read every mask pixel as a class id, so a dataset has no place for a pixel without data.
    Crop or fill such scenes first; `dakter segment` and the Space read them and leave them out.
    """
    grey = read_grey(path, normalization)
    if not grey.valid.all():
        raise DataError(nodata_refusal(path, grey))
    return grey.image


def nodata_refusal(path: str, grey: Grey) -> str:
    """The message for an image with no-data pixels: the file, how many, of which kind, what to do."""
    pixels = grey.raster.pixels
    first = pixels[..., 0] if pixels.ndim == 3 else pixels
    missing = int((~grey.valid).sum())
    non_finite = int((~np.isfinite(first)).sum()) if first.dtype.kind == "f" else 0
    kinds = []
    if non_finite:
        kinds.append(f"{non_finite:,} NaN or infinite")
    if missing - non_finite:
        kinds.append(f"{missing - non_finite:,} equal to its GDAL_NODATA value {grey.raster.nodata:g}")
    return (
        f"{path}: {missing:,} of {grey.valid.size:,} pixels hold no data ({', '.join(kinds)}); `dakter data` "
        "takes only images with data at every pixel (as grey 0 they would look like oil and still get a class): "
        "crop the image to its valid area or fill those pixels first (`dakter segment` reads it as is and leaves "
        "them out)"
    )


def read_mask_ids(path: str) -> np.ndarray:
    """A mask whose pixel values are class ids, as int64, with no wrap-around.

    Palette (P) PNGs give their palette indices, grey and 16-bit masks their values, RGB(A)
    masks one grey channel (PIL's luma), TIFF masks their first band.
    """

    if _is_tiff(path):
        array = read_raster(path).pixels
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


def _is_tiff(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as handle:
        return handle.read(4) in TIFF_MAGIC


def normalization_for(spec: str, intensity: str = "linear", clip_percentiles=None) -> Normalization:
    """The normalisation of a data source: what a `dakter data` folder recorded, else the given options."""

    marker = read_marker(spec) if os.path.isdir(spec) else None
    recorded = (marker or {}).get("settings", {}).get("normalization")
    if recorded:
        return Normalization.from_dict(recorded)
    if isinstance(clip_percentiles, (list, tuple)):
        return Normalization(intensity=intensity, clip_percentiles=tuple(clip_percentiles))
    return Normalization.from_options(intensity, clip_percentiles)
