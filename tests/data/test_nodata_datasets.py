"""No-data pixels in `dakter data` (issue 16, point 6): the loaders test pixels as the Space does (non-finite,
or the file's GDAL_NODATA value), refuse such an image naming the file and the count, and record the rule."""

import numpy as np
import tifffile
from geotiff_helpers import GEOTAGS, nodata_tag
from PIL import Image

from dakter_hf.cli import main
from dakter_hf.data.raster import NODATA_POLICY, read_grey
from dakter_hf.utils.ownership import read_marker


def _sigma0(seed=0, size=(32, 32)):
    return np.random.default_rng(seed).uniform(0.01, 0.5, size).astype(np.float32)


def _folder(root, images):
    """ROOT/images/NAME.tif (float32) + ROOT/masks/NAME.png (all oil: a label a no-data pixel must not get)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, (values, tags) in images.items():
        tifffile.imwrite(root / "images" / f"{name}.tif", values, extratags=tags)
        Image.fromarray(np.ones(values.shape, np.uint8)).save(root / "masks" / f"{name}.png")
    return ["data", "--source", f"folder:{root}", "--classes", "background,oil"]


def test_nan_pixels_of_a_float_tiff_are_refused_with_the_file_and_the_count(tmp_path, capsys):
    """Why: "NaN pixels of a float TIFF silently become 0 in `dakter data` (black, which looks like oil) and get
    labels. The Space reports them as no-data and leaves them out."""
    values = _sigma0()
    values[:3, :5] = np.nan
    values[10, 10] = np.inf
    argv = _folder(tmp_path / "raw", {"a": (_sigma0(1), []), "holes": (values, GEOTAGS)})
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "holes.tif: 16 of 1,024 pixels hold no data (16 NaN or infinite)" in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    # the Space's reader counts the same pixels as no data
    assert (~read_grey(str(tmp_path / "raw" / "images" / "holes.tif")).valid).sum() == 16


def test_the_gdal_nodata_value_is_applied(tmp_path, capsys):
    values = _sigma0(2)
    values[:4, :4] = -9999.0
    values[20, 3] = np.nan
    argv = _folder(tmp_path / "raw", {"scene": (values, GEOTAGS + [nodata_tag("-9999")])})
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        "scene.tif: 17 of 1,024 pixels hold no data (1 NaN or infinite, 16 equal to its GDAL_NODATA value -9999)"
        in err
    )
    assert not (tmp_path / "out").exists()
    # the same value without the tag is data (a very dark pixel), and the folder is written
    tifffile.imwrite(tmp_path / "raw" / "images" / "scene.tif", np.where(np.isnan(values), 0.1, values))
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0


def test_the_rule_is_recorded_in_the_marker_and_the_card(tmp_path):
    argv = _folder(tmp_path / "raw", {"a": (_sigma0(3), GEOTAGS + [nodata_tag("-9999")])})
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0  # a no-data tag no pixel matches: all data
    assert read_marker(str(tmp_path / "out"))["settings"]["nodata"] == NODATA_POLICY
    assert f"No-data pixels: {NODATA_POLICY}." in (tmp_path / "out" / "README.md").read_text()
