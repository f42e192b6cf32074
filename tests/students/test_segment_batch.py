"""`dakter segment` goes through a batch (issue 16, point 5): each unreadable input is one line, the rest
are segmented, the exit code is 2 at the end; huge headers meet the Space's pixel limit; GeoTIFFs give
georeferenced oil-probability GeoTIFFs."""

import struct
import zlib

import numpy as np
import pytest
import tifffile
from geotiff_helpers import GEOTAGS, UTM_KEYS
from PIL import Image
from student_helpers import ID2LABEL, TINY_OVERRIDES

from dakter_hf.cli import main
from dakter_hf.data.raster import DEFAULT_MAX_PIXELS
from dakter_hf.space import options as space_options
from dakter_hf.students.models import build_student, make_image_processor


WINDOW = 32


def png_header(width, height):
    """A PNG whose IHDR claims width x height, with almost no pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    path = tmp_path_factory.mktemp("student")
    model = build_student("segformer-b0", ID2LABEL, seed=0, **TINY_OVERRIDES["segformer-b0"])
    model.config.dakter_resolution = WINDOW
    model.config.dakter_pixel_scale = 1.0
    model.save_pretrained(path)
    make_image_processor(model, WINDOW).save_pretrained(path)
    return str(path)


def scene(path, size=(40, 48), seed=0):
    grey = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(path)


def test_one_limit_for_the_space_and_dakter_segment(monkeypatch):
    monkeypatch.delenv("DAKTER_MAX_PIXELS", raising=False)
    assert space_options.DEFAULT_MAX_PIXELS is DEFAULT_MAX_PIXELS
    assert space_options.max_pixels_from(None) == DEFAULT_MAX_PIXELS


def test_unreadable_inputs_are_reported_and_the_rest_segmented(student, tmp_path, capsys):
    """Why: "dakter segment stops at the first unreadable input, and the later files are never processed"."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    scene(scenes / "a.png")
    (scenes / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (scenes / "c_notes.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    scene(scenes / "d.png", seed=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    argv = ["segment", str(scenes), str(tmp_path / "absent.png"), str(empty), "--model", student, "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    for name in ("a", "d"):  # before and after the broken files
        assert (out / f"{name}_mask.png").is_file() and (out / f"{name}_oil_probability.tif").is_file()
        assert f"{name}.png: 48x40" in captured.out
    assert not (out / "b_broken_mask.png").exists() and not (out / "c_notes_mask.png").exists()
    lines = [line for line in captured.err.splitlines() if line.startswith("dakter segment: error:")]
    assert len(lines) == 4, captured.err  # one line per failed input, each naming it
    for name in ("b_broken.png", "c_notes.tif", "absent.png", str(empty)):
        assert sum(name in line for line in lines) == 1, (name, lines)
    assert "Traceback" not in captured.err and "4 input(s) failed, 2 segmented" in captured.err


def test_a_huge_png_header_meets_the_spaces_pixel_limit(student, tmp_path, capsys):
    """Why: "dakter segment on a PNG whose header claims 30000 x 30000 pixels gives a DecompressionBombError"."""
    (tmp_path / "huge.png").write_bytes(png_header(30000, 30000))
    scene(tmp_path / "small.png")
    out = tmp_path / "out"
    argv = ["segment", str(tmp_path / "huge.png"), str(tmp_path / "small.png"), "--model", student, "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "huge.png: 30000x30000 (height x width)" in err and f"limit of {DEFAULT_MAX_PIXELS} pixels" in err
    assert "--max-pixels" in err and "Traceback" not in err and "DecompressionBomb" not in err
    assert (out / "small_mask.png").is_file()
    # the limit is an option: a header above a lower limit is refused before anything is decoded
    (tmp_path / "wide.png").write_bytes(png_header(3000, 20))  # pixel data absent: decoding would fail
    assert main(["segment", str(tmp_path / "wide.png"), "--model", student, "--out", str(out), "--max-pixels", "500"])
    assert "20x3000 (height x width) = 60000 pixels, above the limit of 500" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-3"])
def test_bad_max_pixels_is_refused(student, tmp_path, capsys, value):
    scene(tmp_path / "a.png")
    argv = ["segment", str(tmp_path / "a.png"), "--model", student, "--out", str(tmp_path / "o"), "--max-pixels"]
    assert main([*argv, value]) == 2
    assert "--max-pixels" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_non_finite_pixel_scale_is_refused(student, tmp_path, capsys, value):
    scene(tmp_path / "a.png")
    argv = ["segment", str(tmp_path / "a.png"), "--model", student, "--out", str(tmp_path / "o")]
    assert main([*argv, f"--pixel-scale={value}"]) == 2
    assert "--pixel-scale" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_geotiff_gives_a_georeferenced_oil_probability_geotiff(student, tmp_path, capsys):
    """Why: "segment on a GeoTIFF writes no georeferenced output, where the Space does"."""
    values = np.random.default_rng(2).random((36, 44)).astype(np.float32)
    tifffile.imwrite(tmp_path / "scene.tif", values, extratags=GEOTAGS)
    assert main(["segment", str(tmp_path / "scene.tif"), "--model", student, "--out", str(tmp_path / "o")]) == 0
    with tifffile.TiffFile(tmp_path / "o" / "scene_oil_probability.tif") as tif:
        page = tif.pages[0]
        oil = page.asarray()
        tags = {tag.code: tag.value for tag in page.tags}
    assert oil.dtype == np.float32 and oil.shape == (36, 44) and np.isfinite(oil).all()
    assert 0 <= oil.min() and oil.max() <= 1
    assert tags[33550] == (10.0, 10.0, 0.0) and tags[33922] == GEOTAGS[1][3] and tuple(tags[34735]) == UTM_KEYS
    probabilities = np.load(tmp_path / "o" / "scene_probabilities.npy").astype(np.float32)
    np.testing.assert_allclose(oil, probabilities[1], atol=1e-3)  # float16 storage of the .npy
