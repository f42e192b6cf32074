"""The one raster reader (`data.raster` + `data.geotiff`): band order, no-data, geotags, the pixel limit."""

import numpy as np
import pytest
import tifffile
from geotiff_helpers import GEOTAGS, nodata_tag
from PIL import Image

from dakter_hf.data.geotiff import georeference, write_probability_geotiff
from dakter_hf.data.raster import (
    Normalization,
    check_pixels,
    normalize_to_uint8,
    read_grey,
    read_raster,
    read_sar_grey,
    valid_pixels,
)
from dakter_hf.errors import DataError, PixelLimitError, RasterError


def stretch(values, keep, low_p=1.0, high_p=99.0):
    """The documented default by hand: the kept pixels' percentiles stretched to 0..255, 0 elsewhere."""
    low, high = np.percentile(values[keep].astype(np.float64), [low_p, high_p])
    grey = np.clip(np.round((values.astype(np.float64) - low) / (high - low) * 255), 0, 255)
    return np.where(keep, grey, 0).astype(np.uint8)


def dual_pol(height=40, width=50, seed=0):
    """(2, H, W) float32 VV/VH-like intensities: two bands, so the array's shape alone does not say where they are."""
    rng = np.random.default_rng(seed)
    return (rng.random((2, height, width)) ** 2 * np.array([1.0, 0.2])[:, None, None]).astype(np.float32)


# ------------------------------------------------------------------------------ band order
@pytest.mark.parametrize("layout", ["planar", "pages", "bands_last"])
def test_band_order_comes_from_the_tiff_axes(tmp_path, layout):
    bands = dual_pol()
    path = tmp_path / "scene.tif"
    if layout == "planar":  # one page, SamplesPerPixel 2 stored bands-first (axes SYX)
        tifffile.imwrite(path, bands, photometric="minisblack", planarconfig="separate")
    elif layout == "pages":  # one band per page (axes QYX)
        tifffile.imwrite(path, bands)
    else:  # interleaved (axes YXS)
        tifffile.imwrite(path, np.moveaxis(bands, 0, -1), photometric="minisblack", planarconfig="contig")
    raster = read_raster(str(path))
    assert raster.kind == "TIFF" and raster.pixels.shape == (40, 50, 2)
    np.testing.assert_array_equal(raster.pixels[..., 0], bands[0])
    np.testing.assert_array_equal(raster.pixels[..., 1], bands[1])
    # the grey image is the first band, stretched (SAR bands are not colours)
    np.testing.assert_array_equal(read_sar_grey(str(path)), stretch(bands[0], np.ones((40, 50), bool)))


def test_rgb_tiff_and_png_give_the_same_luma(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", rgb, photometric="rgb")
    Image.fromarray(rgb).save(tmp_path / "a.png")
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(read_sar_grey(str(tmp_path / "a.tif")), luma)
    assert np.array_equal(read_sar_grey(str(tmp_path / "a.png")), luma)


def test_more_bands_than_a_scene_has_are_refused_before_decoding(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((6, 16, 16), np.float32))
    with pytest.raises(RasterError, match=r"stack\.tif.*more than 4 bands"):
        read_raster(str(tmp_path / "stack.tif"))


# -------------------------------------------------------------------------------- no-data
def test_nodata_value_and_nan_are_left_out_of_the_stretch_and_reported(tmp_path):
    values = dual_pol(seed=2)
    values[:, :10, :12] = -9999.0  # the file's no-data value
    values[:, 30, 40:45] = np.nan
    path = tmp_path / "sigma0.tif"
    tifffile.imwrite(path, values, photometric="minisblack", planarconfig="separate", extratags=[nodata_tag("-9999")])
    expected_valid = np.ones((40, 50), bool)
    expected_valid[:10, :12] = False
    expected_valid[30, 40:45] = False

    grey = read_grey(str(path))
    assert grey.raster.nodata == -9999.0
    np.testing.assert_array_equal(grey.valid, expected_valid)
    np.testing.assert_array_equal(grey.image, stretch(values[0], expected_valid))
    assert grey.image[expected_valid].max() == 255  # the -9999 did not squash the valid pixels into a few grey levels
    # dB of linear power: the negative no-data value is no data, not a reason to refuse the file
    db = read_grey(str(path), Normalization(intensity="db"))
    values_db = 10 * np.log10(np.where(expected_valid, values[0], 1.0).astype(np.float64))
    np.testing.assert_array_equal(db.image, stretch(values_db, expected_valid))


def test_the_loaders_refuse_nodata_files_and_keep_the_grey_of_the_others(tmp_path):
    """`dakter data` (read_sar_grey) applies the GDAL_NODATA value and NaN as the Space does, and refuses such
    an image naming the file and the count (issue 16: before, NaN became 0 and -9999 was data)."""
    values = dual_pol(seed=3)[0]
    values[:5, :5] = -9999.0
    values[20, 20] = np.nan
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, values, extratags=[nodata_tag("-9999")])
    with pytest.raises(DataError, match=r"a\.tif: 26 of 2,000 pixels hold no data \(1 NaN or infinite, 25 equal"):
        read_sar_grey(str(path))
    values[20, 20] = 0.25
    tifffile.imwrite(path, values, extratags=[nodata_tag("-9999")])
    with pytest.raises(DataError, match=r"a\.tif: 25 of 2,000 pixels hold no data \(25 equal to its GDAL_NODATA"):
        read_sar_grey(str(path))
    tifffile.imwrite(path, values)  # without the tag -9999 is a value: the grey as before
    np.testing.assert_array_equal(read_sar_grey(str(path)), stretch(values, np.ones(values.shape, bool)))
    np.testing.assert_array_equal(read_sar_grey(str(path)), normalize_to_uint8(values))


def test_eight_bit_nodata_pixels_become_zero_and_the_rest_stays_as_stored(tmp_path):
    pixels = (np.arange(20 * 30) % 250 + 3).astype(np.uint8).reshape(20, 30)
    pixels[:4, :4] = 0
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, pixels, extratags=[nodata_tag("0")])
    grey = read_grey(str(path))
    assert (~grey.valid).sum() == 16 and np.array_equal(grey.image, pixels)
    # a NaN no-data value matches no integer pixel
    np.testing.assert_array_equal(valid_pixels(pixels, float("nan")), np.ones((20, 30), bool))


# -------------------------------------------------------------------------------- geotags
def test_geotags_round_trip_through_the_probability_geotiff(tmp_path):
    values = dual_pol(seed=4)
    values[:, :8, :8] = -9999.0
    source = tmp_path / "scene.tif"
    tifffile.imwrite(
        source, values, photometric="minisblack", planarconfig="separate", extratags=GEOTAGS + [nodata_tag("-9999")]
    )
    grey = read_grey(str(source))
    spacing, note, geotags = georeference(grey.raster.tags, 40)
    assert spacing == (10.0, 10.0) and note == "from the GeoTIFF"
    assert sorted(tag[0] for tag in geotags) == [33550, 33922, 34735, 34737]  # georeferencing only, no no-data tag

    probability = np.random.default_rng(5).random((40, 50)).astype(np.float32)
    out = write_probability_geotiff(str(tmp_path / "oil.tif"), probability, geotags, grey.valid)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))  # written through a temporary name
    written = read_raster(out)
    assert np.isnan(written.nodata) and written.pixels.dtype == np.float32
    for code in (33550, 33922, 34735, 34737):
        assert written.tags[code].value == grey.raster.tags[code].value, code
    np.testing.assert_array_equal(np.isnan(written.pixels), ~grey.valid)
    np.testing.assert_array_equal(written.pixels[grey.valid], probability[grey.valid])
    # and the output reads back as the same scene: same spacing, same valid pixels
    assert georeference(written.tags, 40)[0] == (10.0, 10.0)
    np.testing.assert_array_equal(read_grey(out).valid, grey.valid)


def test_malformed_georeferencing_keeps_the_pixels():
    spacing, note, geotags = georeference({34735: type("Tag", (), {"value": (1, 1, 0)})()}, 10)
    assert spacing is None and geotags == [] and "unreadable" in note


# ---------------------------------------------------------------------------- pixel limit
def test_one_pixel_limit_check_height_then_width():
    check_pixels(300, 200, 60_000)
    check_pixels(300, 200, None)
    with pytest.raises(PixelLimitError, match=r"300x200 \(height x width\) = 60000 pixels.*59999") as caught:
        check_pixels(300, 200, 59_999, where="scene.tif")
    assert (caught.value.height, caught.value.width, caught.value.max_pixels) == (300, 200, 59_999)
    assert str(caught.value).startswith("scene.tif: ") and isinstance(caught.value, DataError)
    with pytest.raises(PixelLimitError, match="empty"):
        check_pixels(0, 5, None)


def _png_header(width, height):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + data + chunk(b"IEND", b"")


def test_sizes_are_checked_from_the_header_before_decoding(tmp_path):
    (tmp_path / "wide.png").write_bytes(_png_header(3000, 20))  # pixel data absent: decoding would fail
    with pytest.raises(PixelLimitError, match=r"wide\.png: 20x3000") as caught:
        read_raster(str(tmp_path / "wide.png"), max_pixels=50_000)
    assert (caught.value.height, caught.value.width) == (20, 3000)
    tifffile.imwrite(tmp_path / "big.tif", np.zeros((30, 40), np.uint16))
    with pytest.raises(PixelLimitError, match=r"30x40"):
        read_raster(str(tmp_path / "big.tif"), max_pixels=1_000)
    # no limit given (the loaders): a header beyond what PIL decodes is still a message, not a traceback
    (tmp_path / "bomb.png").write_bytes(_png_header(30000, 30000))
    with pytest.raises(DataError, match=r"bomb\.png"):
        read_sar_grey(str(tmp_path / "bomb.png"))


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "notes.png").write_bytes(b"not an image")
    for name in ("broken.tif", "broken.png", "notes.png", "absent.png"):
        with pytest.raises(RasterError, match=name.replace(".", r"\.")):
            read_grey(str(tmp_path / name))
