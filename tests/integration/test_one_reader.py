"""One GeoTIFF, two front ends: `dakter segment` and the Space read it alike and give identical masks.

The file is what a SAR user uploads: float32 dual-polarisation intensities stored bands-first,
a numeric GDAL no-data value over a corner, and UTM georeferencing. Both front ends must take
the first band from the TIFF's axes, leave the no-data pixels out of the stretch, and write
the no-data id (255) there; the Space is driven over HTTP as in tests/space/test_space.py.
"""

import os

import numpy as np
import pytest
import tifffile
import torch
from geotiff_helpers import GEOTAGS, nodata_tag
from gradio_client import Client, handle_file
from helpers import REPO_ROOT
from PIL import Image
from student_helpers import ID2LABEL, TINY_OVERRIDES

from dakter_hf.cli import main
from dakter_hf.data.raster import NODATA_ID, read_grey
from dakter_hf.data.simulate import simulate_sar
from dakter_hf.space.scene_io import read_scene
from dakter_hf.students.models import build_student, make_image_processor
from dakter_hf.students.segment import student_normalization


WINDOW, HEIGHT, WIDTH = 32, 60, 64


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """(folder, model) of an untrained tiny SegFormer: its near-0.5 decisions follow every grey level."""
    folder = tmp_path_factory.mktemp("tiny-student")
    model = build_student("segformer-b0", ID2LABEL, seed=0, **TINY_OVERRIDES["segformer-b0"])
    model.config.dakter_resolution = WINDOW
    model.config.dakter_pixel_scale = 1.0
    model.save_pretrained(folder)
    make_image_processor(model, WINDOW).save_pretrained(folder)
    return str(folder), model


@pytest.fixture(scope="module")
def space(student, tmp_path_factory):
    """A client of the Space serving the tiny student (and the committed default pipeline)."""
    from dakter_hf.space.launch import create_demo, launch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CPUs (see conftest.one_thread)
    demo = create_demo(
        pipeline=str(REPO_ROOT / "spaces" / "models" / "pipeline"),
        students=student[0],
        max_pixels=2_000_000,
        workdir=str(tmp_path_factory.mktemp("space")),
    )
    _, url, _ = launch(demo, prevent_thread_lock=True, quiet=True)
    yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    demo.close()
    torch.set_num_threads(threads)


def write_scene(path):
    """(2, H, W) float32 VV/VH GeoTIFF, planar (bands-first), -9999 over the top-left corner: (bands, no-data mask)."""
    grey = np.asarray(simulate_sar(1, size=WIDTH, seed=3)["train"][0]["image"].convert("L"))[:HEIGHT]
    vv = (grey.astype(np.float32) / 255) ** 2
    bands = np.stack([vv, 0.2 * vv])
    nodata = np.zeros((HEIGHT, WIDTH), bool)
    nodata[:12, :16] = True
    bands[:, nodata] = -9999.0
    tifffile.imwrite(
        path, bands, photometric="minisblack", planarconfig="separate", extratags=GEOTAGS + [nodata_tag("-9999")]
    )
    return bands, nodata


def test_dakter_segment_and_the_space_give_identical_masks(student, space, tmp_path):
    folder, model = student
    path = tmp_path / "scene.tif"
    bands, nodata = write_scene(path)
    valid = ~nodata

    # one grey image and one valid-pixel mask: the first band, its valid pixels' 1..99 percentiles stretched
    low, high = np.percentile(bands[0][valid].astype(np.float64), [1, 99])
    expected = np.where(valid, np.clip(np.round((bands[0] - low) / (high - low) * 255), 0, 255), 0).astype(np.uint8)
    grey = read_grey(str(path), student_normalization(model))
    scene = read_scene(str(path), 2_000_000, student_normalization(model))
    np.testing.assert_array_equal(grey.image, expected)
    np.testing.assert_array_equal(scene.grey, expected)
    np.testing.assert_array_equal(grey.valid, valid)
    np.testing.assert_array_equal(scene.valid, valid)

    # `dakter segment` (at the Space's batch size: the comparison is about reading, not batching)
    out = tmp_path / "out"
    argv = ["segment", str(path), "--model", folder, "--out", str(out), "--device", "cpu", "--batch-size", "16"]
    assert main(argv) == 0
    cli_mask = np.asarray(Image.open(out / "scene_mask.png"))
    cli_oil = np.load(out / "scene_probabilities.npy")[1].astype(np.float32)

    # the Space's segment handler, over HTTP
    name = os.path.basename(folder)  # the Space names a student folder by its basename
    mask_path, tif_path, status = space.predict(handle_file(str(path)), name, None, api_name="/segment")[5:8]
    with Image.open(mask_path) as image:
        space_mask = np.asarray(image)
    space_oil = tifffile.imread(tif_path)

    assert cli_mask.shape == space_mask.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(cli_mask, space_mask)
    assert (cli_mask[nodata] == NODATA_ID).all() and set(np.unique(cli_mask[valid]).tolist()) == {0, 1}
    np.testing.assert_array_equal(np.isnan(cli_oil), nodata)
    np.testing.assert_array_equal(np.isnan(space_oil), nodata)
    np.testing.assert_allclose(cli_oil[valid], space_oil[valid], atol=1e-3)  # the .npy holds float16
    assert "GeoTIFF" in status and f"{int(nodata.sum()):,} no-data pixels left out" in status
