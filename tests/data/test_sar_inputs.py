"""SAR-native inputs: 16-bit masks, 16-bit and float rasters, the normalisation `dakter data` records."""

import numpy as np
import pytest
from PIL import Image

from dakter_hf.cli import main
from dakter_hf.data.raster import Normalization, normalize_to_uint8, read_sar_grey
from dakter_hf.errors import DataError
from dakter_hf.utils.ownership import read_marker


def test_sixteen_bit_mask_values_are_not_wrapped(tmp_path):
    from dakter_hf.data.folder import load_folder

    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(root / "images" / "a.png")
    mask = np.zeros((8, 8), np.uint16)
    mask[0, 0] = 257  # would wrap to 1 (a valid class) as uint8
    Image.fromarray(mask).save(root / "masks" / "a.png")
    with pytest.raises(DataError, match=r"a\.png.*\[257\]"):
        load_folder(str(root), ["background", "oil"])


def _ramp(dtype, low, high):
    values = np.linspace(low, high, 64 * 64).reshape(64, 64)
    return values.astype(dtype)


def test_sixteen_bit_png_and_tiff_and_float_tiff_round_trip(tmp_path):
    import tifffile

    sixteen = _ramp(np.uint16, 1000, 60000)
    Image.fromarray(sixteen).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "b.tif", sixteen)
    sigma0 = _ramp(np.float32, 0.001, 0.5)
    tifffile.imwrite(tmp_path / "c.tif", sigma0)
    expected = normalize_to_uint8(sixteen.astype(np.float64))
    # the documented default: 1st..99th percentile stretched to 0..255
    low, high = np.percentile(sixteen.astype(np.float64), [1, 99])
    by_hand = np.clip(np.round((sixteen - low) / (high - low) * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(expected, by_hand)
    assert np.array_equal(read_sar_grey(str(tmp_path / "a.png")), by_hand)
    assert np.array_equal(read_sar_grey(str(tmp_path / "b.tif")), by_hand)
    grey = read_sar_grey(str(tmp_path / "c.tif"))
    assert grey.min() == 0 and grey.max() == 255 and len(np.unique(grey)) > 200  # not all zeros, not clipped flat
    db = read_sar_grey(str(tmp_path / "c.tif"), Normalization(intensity="db"))
    values_db = 10 * np.log10(sigma0.astype(np.float64))
    low, high = np.percentile(values_db, [1, 99])
    assert np.array_equal(db, np.clip(np.round((values_db - low) / (high - low) * 255), 0, 255).astype(np.uint8))
    eight = (np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)
    Image.fromarray(eight).save(tmp_path / "d.png")
    assert np.array_equal(read_sar_grey(str(tmp_path / "d.png")), eight)  # 8-bit is used as stored


def test_normalisation_is_recorded_by_dakter_data(tmp_path):
    import tifffile

    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    tifffile.imwrite(root / "images" / "a.tif", _ramp(np.float32, 0.001, 0.5))
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "masks" / "a.png")
    out = tmp_path / "out"
    folder = ["data", "--source", f"folder:{root}", "--classes", "background,oil"]
    assert main([*folder, "--intensity", "db", "--clip-percentiles", "2,98", "--out", str(out)]) == 0
    marker = read_marker(str(out))
    assert marker["settings"]["normalization"]["intensity"] == "db"
    assert marker["settings"]["normalization"]["clip_percentiles"] == [2.0, 98.0]
    assert "intensity db, 2-98 percentile stretch" in (out / "README.md").read_text()
    # a student trained on this folder inherits the recorded normalisation (and `dakter segment` applies it)
    from dakter_hf.students.train import StudentArguments, input_normalization

    inherited = input_normalization(StudentArguments(real=str(out), mode="real"))
    assert inherited == Normalization(intensity="db", clip_percentiles=(2.0, 98.0))
    with pytest.raises(SystemExit):
        main(["data", "--source", f"folder:{root}", "--out", str(tmp_path / "x"), "--intensity", "log"])
    assert main([*folder, "--clip-percentiles", "9", "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "y").exists()
