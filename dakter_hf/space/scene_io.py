"""Read uploaded SAR scenes (JPEG, PNG, TIFF/GeoTIFF) and write the Space's downloads.

Why a module of its own: uploads are untrusted and can be huge, so every reader
checks the pixel count from the file header *before* decoding anything, and turns
any decoder failure into a `SceneError` with a one-line message for the page.

Grey levels: the pixels are read in their own dtype and mapped to the 8-bit grey the
students see by `dakter_hf.data.raster.normalize_to_uint8`, with the normalisation
the student recorded at training time (`students.segment.student_normalization`;
default: 8-bit files as stored, RGB to grey by ITU-R 601 luma, 16-bit and float files
stretched from their 1st..99th percentile to 0..255). No-data pixels (non-finite, or
equal to GDAL_NODATA) take no part in the stretch and are left out of the statistics.

GeoTIFF: ModelPixelScaleTag / ModelTransformationTag give the pixel spacing, in
metres for projected CRSs (feet converted) and approximately for geographic ones
(degrees at the scene's latitude). The georeferencing tags are copied unchanged to
the oil-probability GeoTIFF, so it overlays the input in a GIS.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
import tifffile
from PIL import Image

from dakter_hf.data.raster import Normalization, normalize_to_uint8
from dakter_hf.errors import SceneError
from dakter_hf.utils.files import atomic_path

# tags that place the pixel grid on the Earth; copied from input to output
MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION = 33550, 33922, 34264
GEO_KEY_DIRECTORY, GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS, GDAL_NODATA = 34735, 34736, 34737, 42113
GEO_TAGS = (MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION, GEO_KEY_DIRECTORY, GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS)
# EPSG linear units -> metres (ProjLinearUnitsGeoKey)
LINEAR_UNITS = {9001: 1.0, 9002: 0.3048, 9003: 1200 / 3937}


class Tag(NamedTuple):
    """A TIFF tag's raw parts (code, TIFF data type, count, value), detached from the file."""

    code: int
    dtype: int
    count: int
    value: object



@dataclass
class Scene:
    """A scene ready for a student: grey uint8 pixels plus what the file said about the ground."""

    grey: np.ndarray                                # (H, W) uint8
    valid: Optional[np.ndarray] = None              # (H, W) bool, False at no-data pixels; None = all valid
    pixel_spacing: Optional[Tuple[float, float]] = None   # metres (x, y), from the file
    spacing_note: str = ""                          # where the spacing came from
    geotags: List[tuple] = field(default_factory=list)    # tifffile extratags to copy to outputs
    description: str = ""                           # format, depth, size, normalisation

    @property
    def valid_count(self) -> int:
        return int(self.grey.size if self.valid is None else self.valid.sum())


def sniff_format(path: str) -> str:
    """'tiff', 'png' or 'jpeg' from the magic bytes (not the name), else SceneError."""
    if path is None or not os.path.isfile(path):
        raise SceneError("No file received: upload a JPEG, PNG or TIFF image.")
    if os.path.getsize(path) == 0:
        raise SceneError("The uploaded file is empty (0 bytes).")
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    raise SceneError("This file is not an image the Space reads: upload a JPEG, PNG or TIFF (GeoTIFF) file.")


def check_pixels(width: int, height: int, max_pixels: Optional[int]) -> None:
    if width < 1 or height < 1:
        raise SceneError(f"The image header gives an empty size ({width} x {height}).")
    if max_pixels is not None and width * height > max_pixels:
        raise SceneError(f"The image is {width} x {height} = {width * height:,} pixels; this Space segments at most {max_pixels:,} pixels. Crop or downsample it first.")


def read_scene(path: str, max_pixels: Optional[int], normalization=None) -> Scene:
    """Read an upload as a `Scene`, refusing it from its header if it has more than `max_pixels`.

    `normalization` is a `sar_image.Normalization` (default: its defaults).
    """

    normalization = normalization or Normalization()
    kind = sniff_format(path)
    if kind == "tiff":
        raw, tags, what = _read_tiff(path, max_pixels)
    else:
        raw, tags, what = _read_pil(path, kind, max_pixels)
    grey, valid = to_grey(raw, _nodata_value(tags.get(GDAL_NODATA)), normalization)
    height, width = grey.shape
    try:
        spacing, note = pixel_spacing_from_tags(tags, height)
        geotags = [_as_extratag(tags[code]) for code in GEO_TAGS if code in tags]
    except Exception as error:  # malformed georeferencing: keep the pixels, say what was dropped
        spacing, geotags = None, []
        note = f"georeferencing tags unreadable ({type(error).__name__}); pixel spacing not known"
    kind_name = "GeoTIFF" if geotags else what
    bands = f", {raw.shape[-1]} bands" if raw.ndim == 3 else ""
    return Scene(grey=grey, valid=None if valid.all() else valid, pixel_spacing=spacing, spacing_note=note, geotags=geotags,
                 description=f"{kind_name} ({raw.dtype}{bands}, {normalization.describe()}), {width} x {height} px")


def to_grey(raw: np.ndarray, nodata: Optional[float], normalization) -> Tuple[np.ndarray, np.ndarray]:
    """(uint8 grey, valid mask) from raw pixels (H, W) or (H, W, bands), no-data kept out of the stretch."""

    first = raw[..., 0] if raw.ndim == 3 else raw
    valid = np.isfinite(first) if first.dtype.kind == "f" else np.ones(first.shape, dtype=bool)
    if nodata is not None and not math.isnan(nodata):
        valid &= first != nodata
    if raw.dtype == np.uint8 or valid.all():
        grey = normalize_to_uint8(raw, normalization, where="the uploaded image")
    else:  # no-data as NaN: excluded from the percentiles, then 0
        values = raw.astype(np.float64)
        values[~valid] = np.nan
        grey = normalize_to_uint8(values, normalization, where="the uploaded image")
    return np.ascontiguousarray(np.where(valid, grey, 0).astype(np.uint8)), valid


# ---------------------------------------------------------------------------- PIL
def _png_size(path: str) -> Tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, read before PIL opens the file."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise SceneError("Cannot read this PNG file: its header is damaged.")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _read_pil(path: str, kind: str, max_pixels: Optional[int]) -> Tuple[np.ndarray, dict, str]:
    """(raw pixels, no tags, format name) of a JPEG or PNG."""
    if kind == "png":  # exact size in the message, even where PIL would refuse first
        check_pixels(*_png_size(path), max_pixels)
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:
        # PIL refuses far above our limit before we can read the size ourselves
        limit = f"; this Space segments at most {max_pixels:,} pixels" if max_pixels else ""
        raise SceneError(f"The image is larger than {2 * Image.MAX_IMAGE_PIXELS:,} pixels{limit}.") from None
    except Exception as error:  # untrusted bytes: any decoder failure is a bad upload
        raise SceneError(f"Cannot read this {kind.upper()} file ({type(error).__name__}: {error}).") from None
    with image:
        check_pixels(*image.size, max_pixels)
        try:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L"):
                raw = np.asarray(image).astype(np.uint16)
            elif image.mode in ("I", "F", "L", "RGB"):
                raw = np.asarray(image)
            else:  # palette, grey + alpha, CMYK, ...: as PIL shows them
                raw = np.asarray(image.convert("RGB"))
        except Exception as error:
            raise SceneError(f"Cannot decode this {kind.upper()} file; it may be truncated or corrupt ({type(error).__name__}: {error}).") from None
    return raw, {}, kind.upper()


# --------------------------------------------------------------------------- TIFF
def _read_tiff(path: str, max_pixels: Optional[int]) -> Tuple[np.ndarray, dict, str]:
    """(raw pixels (H, W) or (H, W, bands), geo tags by code, "TIFF") after a header size check."""

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            check_pixels(int(page.imagewidth), int(page.imagelength), max_pixels)
            # values are read lazily by tifffile: copy them while the file is open
            tags = {tag.code: Tag(tag.code, int(tag.dtype), tag.count, tag.value) for tag in page.tags if tag.code in GEO_TAGS + (GDAL_NODATA,)}
            series = tif.series[0]
            axes, shape = series.axes, series.shape
            if int(np.prod(shape)) > 4 * int(page.imagewidth) * int(page.imagelength):
                raise SceneError(f"This TIFF holds {shape} ({axes}) values: more than 4 bands or pages; upload one SAR band.")
            array = series.asarray()
    except SceneError:
        raise
    except Exception as error:
        raise SceneError(f"Cannot read this TIFF; it may be truncated or corrupt ({type(error).__name__}: {error}).") from None
    return _bands_last(np.asarray(array), axes), tags, "TIFF"


def _bands_last(array: np.ndarray, axes: str) -> np.ndarray:
    """(H, W) or (H, W, bands) from a series with axes such as 'YX', 'YXS', 'SYX', 'CYX'."""
    kept = [(a, n) for a, n in zip(axes, array.shape) if n > 1 or a in "YX"]
    array = array.reshape([n for _, n in kept])
    axes = "".join(a for a, _ in kept)
    if axes == "YX" or (len(axes) == 3 and axes[:2] == "YX"):
        return array
    if len(axes) == 3 and axes[1:] == "YX":
        return np.moveaxis(array, 0, -1)
    raise SceneError(f"Unsupported TIFF layout {axes} {array.shape}: expected one band (grey) or a few bands.")


def _nodata_value(tag) -> Optional[float]:
    if tag is None:
        return None
    try:
        return float(str(tag.value).strip().strip("\x00"))
    except ValueError:
        return None


def _as_extratag(tag: Tag) -> tuple:
    """A tag -> (code, dtype, count, value, writeonce) for `tifffile.imwrite(extratags=...)`."""
    return (tag.code, tag.dtype, 0 if tag.dtype == 2 else tag.count, tag.value, True)


# ------------------------------------------------------------------ pixel spacing
def geo_keys(tags) -> dict:
    """GeoKeyDirectoryTag -> {key id: value} for the keys stored inline (the ones needed here)."""
    tag = tags.get(GEO_KEY_DIRECTORY)
    if tag is None:
        return {}
    raw = [int(v) for v in tag.value]
    keys = {}
    for start in range(4, 4 + 4 * raw[3], 4):
        key, location, _count, value = raw[start : start + 4]
        if location == 0:
            keys[key] = value
    return keys


def pixel_spacing_from_tags(tags, height: int) -> Tuple[Optional[Tuple[float, float]], str]:
    """(x, y) spacing in metres and a note saying how it was found, or (None, reason)."""
    if MODEL_PIXEL_SCALE in tags:
        sx, sy = (abs(float(v)) for v in tags[MODEL_PIXEL_SCALE].value[:2])
    elif MODEL_TRANSFORMATION in tags:
        m = [float(v) for v in tags[MODEL_TRANSFORMATION].value]
        sx, sy = math.hypot(m[0], m[4]), math.hypot(m[1], m[5])
    else:
        return None, "no pixel spacing in the file"
    if not (sx > 0 and sy > 0):
        return None, "the file's pixel scale is zero"
    keys = geo_keys(tags)
    model = keys.get(1024)  # GTModelTypeGeoKey: 1 projected, 2 geographic
    if model == 2:
        latitude = _scene_latitude(tags, sy, height)
        if latitude is None:
            return None, "geographic CRS without a tie point: spacing unknown"
        metres_x = sx * 111_320.0 * math.cos(math.radians(latitude))
        metres_y = sy * 110_574.0
        return (metres_x, metres_y), f"from the GeoTIFF, degrees converted at latitude {latitude:.2f} (approximate)"
    unit = keys.get(3076, 9001)  # ProjLinearUnitsGeoKey, metre by default
    if unit not in LINEAR_UNITS:
        return None, f"the file's linear unit (EPSG {unit}) is not metres or feet"
    factor = LINEAR_UNITS[unit]
    note = "from the GeoTIFF" if model == 1 else "from the TIFF's pixel scale (no CRS given; metres assumed)"
    return (sx * factor, sy * factor), note


def _scene_latitude(tags, sy: float, height: int) -> Optional[float]:
    if MODEL_TIEPOINT not in tags:
        return None
    tie = [float(v) for v in tags[MODEL_TIEPOINT].value]
    latitude = tie[4] - (height / 2 - tie[1]) * sy
    return latitude if -90 <= latitude <= 90 else None


# ------------------------------------------------------------------------ writing
def write_mask_png(path: str, mask: np.ndarray, palette: np.ndarray, nodata_colour=(96, 96, 96)) -> str:
    """Palette PNG whose pixel values are class ids (viewers show the class colours); 255 = no data."""
    full = np.zeros((256, 3), dtype=np.uint8)  # a full palette: PIL keeps every index as written
    full[: len(palette)] = palette[:255]
    full[255] = nodata_colour
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(full.reshape(-1).tolist())
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")
    return path


def write_probability_geotiff(path: str, probability: np.ndarray, scene: Scene) -> str:
    """float32 (H, W) probability as a (Geo)TIFF: the input's georeferencing tags, NaN at no-data."""

    data = probability.astype(np.float32)
    tags = list(scene.geotags)
    if scene.valid is not None:
        data = np.where(scene.valid, data, np.float32("nan"))
        tags.append((GDAL_NODATA, 2, 0, "nan", True))
    with atomic_path(path) as temporary:
        tifffile.imwrite(temporary, data, photometric="minisblack", metadata=None, extratags=tags, compression="zlib")
    return path
