"""The Space's upload policy over `dakter_hf.data.raster`: which files it takes, how big, and what it says.

Uploads are untrusted and can be huge, so the format is sniffed from the magic bytes
(JPEG, PNG or TIFF only), the pixel count is checked from the file header *before*
anything is decoded (the Space's `--max-pixels`), and every refusal comes back as a
`SceneError` with a one-line message for the page (no server paths in it).

Everything else is the one reader that `dakter segment` and `dakter data` use too
(`data.raster.read_grey`): band order from tifffile's axes, grey levels mapped as the
student's training data were (`students.segment.student_normalization`), no-data pixels
(non-finite, or equal to GDAL_NODATA) left out of the stretch and reported, and the
georeferencing read from and copied to GeoTIFFs (`data.geotiff`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from dakter_hf.data.geotiff import TIFF_MAGIC, georeference
from dakter_hf.data.raster import PNG_MAGIC, Normalization, read_grey
from dakter_hf.errors import DataError, PixelLimitError, RasterError, SceneError
from dakter_hf.utils.files import atomic_path


@dataclass
class Scene:
    """A scene ready for a student: grey uint8 pixels plus what the file said about the ground."""

    grey: np.ndarray  # (H, W) uint8
    valid: Optional[np.ndarray] = None  # (H, W) bool, False at no-data pixels; None = all valid
    pixel_spacing: Optional[Tuple[float, float]] = None  # metres (x, y), from the file
    spacing_note: str = ""  # where the spacing came from
    geotags: List[tuple] = field(default_factory=list)  # tifffile extratags to copy to outputs
    description: str = ""  # format, depth, size, normalisation

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
    if head[:4] in TIFF_MAGIC:
        return "tiff"
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    raise SceneError("This file is not an image the Space reads: upload a JPEG, PNG or TIFF (GeoTIFF) file.")


def read_scene(path: str, max_pixels: Optional[int], normalization=None) -> Scene:
    """Read an upload as a `Scene`, refusing it from its header if it has more than `max_pixels`.

    `normalization` is a `data.raster.Normalization` (default: its defaults).
    """

    normalization = normalization or Normalization()
    sniff_format(path)
    try:
        grey = read_grey(path, normalization, max_pixels, where="the uploaded image")
    except DataError as error:
        raise SceneError(page_message(error)) from None
    raw = grey.raster.pixels
    height, width = grey.image.shape
    spacing, note, geotags = georeference(grey.raster.tags, height)
    kind_name = "GeoTIFF" if geotags else grey.raster.kind
    bands = f", {raw.shape[-1]} bands" if raw.ndim == 3 else ""
    return Scene(
        grey=grey.image,
        valid=None if grey.valid.all() else grey.valid,
        pixel_spacing=spacing,
        spacing_note=note,
        geotags=geotags,
        description=f"{kind_name} ({raw.dtype}{bands}, {normalization.describe()}), {width} x {height} px",
    )


def page_message(error: DataError) -> str:
    """The reader's refusal in the Space's words: sizes as width x height, the Space's limit, no file names."""
    if isinstance(error, PixelLimitError) and error.height is not None:
        width, height = error.width, error.height
        if width < 1 or height < 1:
            return f"The image header gives an empty size ({width} x {height})."
        return (
            f"The image is {width} x {height} = {width * height:,} pixels; this Space segments at most "
            f"{error.max_pixels:,} pixels. Crop or downsample it first."
        )
    text = error.reason if isinstance(error, RasterError) else str(error)
    if isinstance(error, PixelLimitError) and error.max_pixels:
        text += f"; this Space segments at most {error.max_pixels:,} pixels"
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


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
