"""TIFF and GeoTIFF files for `data.raster`: decoding (band order from tifffile's axes), tags, spacing, writing.

A TIFF's size is checked from its first page's header before any pixel is decoded, and
a file holding more values than MAX_BANDS bands (or pages) is refused there too. The
georeferencing tags and GDAL_NODATA are kept, detached from the file (`Tag`).
ModelPixelScaleTag / ModelTransformationTag give the pixel spacing, in metres for
projected CRSs (feet converted) and approximately for geographic ones (degrees at the
scene's latitude). The georeferencing tags are copied unchanged to the float32
probability GeoTIFF, so it overlays the input in a GIS; no-data pixels are NaN there.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tifffile

from dakter_hf.errors import RasterError
from dakter_hf.utils.files import atomic_path


# tags that place the pixel grid on the Earth; copied from input to output
MODEL_PIXEL_SCALE, MODEL_TIEPOINT, MODEL_TRANSFORMATION = 33550, 33922, 34264
GEO_KEY_DIRECTORY, GEO_DOUBLE_PARAMS, GEO_ASCII_PARAMS, GDAL_NODATA = 34735, 34736, 34737, 42113
GEO_TAGS = (
    MODEL_PIXEL_SCALE,
    MODEL_TIEPOINT,
    MODEL_TRANSFORMATION,
    GEO_KEY_DIRECTORY,
    GEO_DOUBLE_PARAMS,
    GEO_ASCII_PARAMS,
)
KEPT_TAGS = GEO_TAGS + (GDAL_NODATA,)
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
MAX_BANDS = 4
# EPSG linear units -> metres (ProjLinearUnitsGeoKey)
LINEAR_UNITS = {9001: 1.0, 9002: 0.3048, 9003: 1200 / 3937}


class Tag(NamedTuple):
    """A TIFF tag's raw parts (code, TIFF data type, count, value), detached from the file."""

    code: int
    dtype: int
    count: int
    value: object


def read_tags(page) -> Dict[int, Tag]:
    """The georeferencing and GDAL_NODATA tags of a tifffile page, by code (values copied while the file is open)."""
    kept = (tag for tag in page.tags if tag.code in KEPT_TAGS)
    return {tag.code: Tag(tag.code, int(tag.dtype), tag.count, tag.value) for tag in kept}


def read_tiff(path: str, where: str, check_size: Callable[[int, int], None]) -> Tuple[np.ndarray, Dict[int, Tag]]:
    """(pixels (H, W) or (H, W, bands) in their own dtype, kept tags); `check_size(height, width)` runs first.

    Errors are `RasterError`s naming `where`.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            height, width = int(page.imagelength), int(page.imagewidth)
            check_size(height, width)
            tags = read_tags(page)
            series = tif.series[0]
            axes, shape = series.axes, tuple(series.shape)
            if int(np.prod(shape)) > MAX_BANDS * height * width:
                raise RasterError(
                    where,
                    f"this TIFF holds {shape} ({axes}) values: more than {MAX_BANDS} bands "
                    "or pages; expected one SAR band",
                )
            array = np.asarray(series.asarray())
    except RasterError:
        raise
    except Exception as error:  # tifffile raises several kinds for damaged files
        reason = f"cannot read this TIFF; it may be truncated or corrupt ({type(error).__name__}: {error})"
        raise RasterError(where, reason) from None
    return bands_last(array, axes, where), tags


def bands_last(array: np.ndarray, axes: str, where: str = "image") -> np.ndarray:
    """(H, W) or (H, W, bands) from a tifffile series with axes such as 'YX', 'YXS', 'SYX', 'CYX', 'QYX'."""
    kept = [(a, n) for a, n in zip(axes, array.shape) if n > 1 or a in "YX"]
    array = array.reshape([n for _, n in kept])
    axes = "".join(a for a, _ in kept)
    if axes == "YX" or (len(axes) == 3 and axes[:2] == "YX"):
        return array
    if len(axes) == 3 and axes[1:] == "YX":
        return np.moveaxis(array, 0, -1)
    raise RasterError(where, f"unsupported TIFF layout {axes} {array.shape}: expected one band (grey) or a few bands")


def nodata_value(tags: Dict[int, Tag]) -> Optional[float]:
    """The GDAL_NODATA value as a float (NaN allowed), None if absent or not a number."""
    tag = tags.get(GDAL_NODATA)
    if tag is None:
        return None
    try:
        return float(str(tag.value).strip().strip("\x00"))
    except ValueError:
        return None


def as_extratag(tag: Tag) -> tuple:
    """A tag -> (code, dtype, count, value, writeonce) for `tifffile.imwrite(extratags=...)`."""
    return (tag.code, tag.dtype, 0 if tag.dtype == 2 else tag.count, tag.value, True)


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


def georeference(tags: Dict[int, Tag], height: int) -> Tuple[Optional[Tuple[float, float]], str, List[tuple]]:
    """(pixel spacing in metres or None, where it came from, extratags to copy to outputs).

    Malformed georeferencing keeps the pixels usable: no spacing, no tags, and a note saying so.
    """
    try:
        spacing, note = pixel_spacing_from_tags(tags, height)
        return spacing, note, [as_extratag(tags[code]) for code in GEO_TAGS if code in tags]
    except Exception as error:  # tag values come from untrusted files: any malformation means "not known"
        return None, f"georeferencing tags unreadable ({type(error).__name__}); pixel spacing not known", []


def write_probability_geotiff(
    path: str, probability: np.ndarray, geotags: Sequence[tuple] = (), valid: Optional[np.ndarray] = None
) -> str:
    """float32 (H, W) probability as a (Geo)TIFF with `geotags` (from `georeference`), NaN where `valid` is False."""

    data = probability.astype(np.float32)
    tags = list(geotags)
    if valid is not None and not valid.all():
        data = np.where(valid, data, np.float32("nan"))
        tags.append((GDAL_NODATA, 2, 0, "nan", True))
    with atomic_path(path) as temporary:
        tifffile.imwrite(temporary, data, photometric="minisblack", metadata=None, extratags=tags, compression="zlib")
    return path
