"""The Gradio Space driven over HTTP with gradio_client: both tabs, downloads, tiling, bad inputs.

The app runs in-process (`launch(prevent_thread_lock=True)`) with the committed default
models (spaces/models/, trained on synthetic scenes by spaces/make_default_models.py).
"""

import argparse
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
import tifffile
import torch
from geotiff_helpers import GEOTAGS, UTM_KEYS, nodata_tag
from gradio_client import Client, handle_file
from helpers import REPO_ROOT
from PIL import Image

from dakter_hf.data.simulate import simulate_sar
from dakter_hf.students.inference import grey_to_unit_tensor, probability_predictor
from dakter_hf.students.segment import segment_array
from dakter_hf.students.tiling import plan_tiles, predict_whole


MODELS = REPO_ROOT / "spaces" / "models"
# Tiled vs one forward pass, on the pixels where every window covering the pixel gives the same
# class: the masks may differ on at most this share of those pixels, and their oil regions must
# overlap with at least this IoU. They are not identical because the one pass sees the whole
# scene (SegFormer's attention is global) while a window sees 64 px. Measured: 0.7 % and 0.88.
TILING_MISMATCH, TILING_OIL_IOU = 0.015, 0.8


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """(client, demo) of the Space on a free local port, with the committed default models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CPUs: one thread is faster here (see conftest.one_thread)
    from dakter_hf.space.launch import create_demo, launch

    demo = create_demo(models_root=str(MODELS), max_pixels=2_000_000, workdir=str(tmp_path_factory.mktemp("space")))
    _, url, _ = launch(demo, prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield client, demo
    demo.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def student():
    from dakter_hf.students.models import load_student

    return load_student(str(MODELS / "student-segformer"))


def mosaic(height, width, seed=11, tile=64):
    """A large scene at the default student's training scale: simulated 64 px scenes side by side."""
    rows, cols = -(-height // tile), -(-width // tile)
    images = simulate_sar(rows * cols, size=tile, seed=seed)["train"]["image"]
    stack = np.stack([np.asarray(image.convert("L")) for image in images])
    return np.ascontiguousarray(
        stack.reshape(rows, cols, tile, tile).transpose(0, 2, 1, 3).reshape(rows * tile, cols * tile)[:height, :width]
    )


def scene(height, width, seed=3):
    """A synthetic grey uint8 scene (square simulation cropped to height x width)."""
    image = simulate_sar(1, size=max(height, width), seed=seed)["train"][0]["image"]
    return np.asarray(image.convert("L"))[:height, :width]


def open_image(path):
    with Image.open(path) as image:
        image.load()
        return image


# ----------------------------------------------------------------------------- events
def test_every_event_has_an_api_name(space):
    client, demo = space
    names = [fn.api_name for fn in demo.fns.values()]
    assert names and all(names), names
    assert {"generate", "segment", "example_scene"} <= set(names)
    assert {"/generate", "/segment", "/example_scene"} <= set(
        client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    )
    assert "2,000,000 pixels" in json.dumps(demo.config)  # the page states the pixel limit


# --------------------------------------------------------------------------- generate
def test_generate_outputs_and_zip(space):
    client, _ = space
    images, overlays, probabilities, zip_path, status = client.predict(5, 2, 4, "DDIM", 2.0, api_name="/generate")
    assert len(images) == len(overlays) == len(probabilities) == 2
    first = open_image(images[0]["image"])
    assert first.size == (256, 256)  # 32 px samples shown enlarged 8x, pixels kept
    assert open_image(overlays[0]["image"]).mode == "RGB" and open_image(overlays[0]["image"]).size == (256, 256)
    panel = open_image(probabilities[0]["image"])
    assert panel.width > 2 * 160 and panel.height >= 160  # two class maps + colour bar
    assert images[0]["caption"] == "seed 5" and "2 sample(s)" in status

    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(archive.namelist())
        assert names == sorted(
            ["generation.json"]
            + [
                f"sample_{i:02d}_seed{5 + i}_{kind}"
                for i in range(2)
                for kind in ("image.png", "mask.png", "soft_label.npy")
            ]
        )
        info = json.loads(archive.read("generation.json"))
        soft = np.load(io.BytesIO(archive.read("sample_01_seed6_soft_label.npy")))
        mask = np.asarray(Image.open(io.BytesIO(archive.read("sample_01_seed6_mask.png"))))
        image = Image.open(io.BytesIO(archive.read("sample_01_seed6_image.png")))
    assert (
        info["seeds"] == [5, 6] and info["class_names"] == ["background", "oil"] and info["display_temperature"] == 2.0
    )
    assert soft.shape == (2, 32, 32) and soft.dtype == np.float32
    assert image.size == (32, 32) and image.mode == "L"
    np.testing.assert_array_equal(mask, soft.argmax(0))

    # sample i comes from seed + i alone: seed 6 asked on its own gives the same soft label
    *_, single_zip, _ = client.predict(6, 1, 4, "DDIM", 1.0, api_name="/generate")
    with zipfile.ZipFile(single_zip) as archive:
        np.testing.assert_allclose(
            np.load(io.BytesIO(archive.read("sample_00_seed6_soft_label.npy"))), soft, atol=1e-5
        )


# ---------------------------------------------------------------------------- segment
def test_segment_geotiff_keeps_georeferencing(space, tmp_path):
    client, _ = space
    grey = scene(200, 300)
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, grey.astype(np.uint16) * 200 + 17, extratags=GEOTAGS)  # 16-bit, stretched by the app

    overlay, legend, panel, oil_percent, area, mask_path, tif_path, status, *_ = client.predict(
        handle_file(str(path)), "student-segformer", None, api_name="/segment"
    )
    assert open_image(overlay).size == (300, 200) and open_image(overlay).mode == "RGB"
    assert open_image(panel).width > 2 * 160
    mask_image = open_image(mask_path)
    assert mask_image.mode == "P" and mask_image.size == (300, 200)
    mask = np.asarray(mask_image)
    oil_pixels = int((mask == 1).sum())
    assert oil_percent == pytest.approx(100 * oil_pixels / mask.size, abs=1e-3)
    assert area == pytest.approx(oil_pixels * 10 * 10 / 1e6, rel=1e-4)  # 10 m pixels read from the file
    assert "GeoTIFF" in status and "from the GeoTIFF" in status and "oil" in legend

    with tifffile.TiffFile(tif_path) as tif:
        page = tif.pages[0]
        probability = page.asarray()
        tags = {tag.code: tag.value for tag in page.tags}
    assert probability.dtype == np.float32 and probability.shape == (200, 300)
    assert 0 <= probability.min() and probability.max() <= 1
    np.testing.assert_array_equal(probability > 0.5, mask == 1)  # two classes: oil wins above 0.5
    assert tags[33550] == (10.0, 10.0, 0.0) and tags[33922] == GEOTAGS[1][3] and tuple(tags[34735]) == UTM_KEYS
    assert tags[34737].startswith("WGS 84 / UTM zone 33N")

    # a spacing typed in wins over the file's
    _, _, _, _, area_20, _, _, status_20, *_ = client.predict(
        handle_file(str(path)), "student-segformer", 20, api_name="/segment"
    )
    assert area_20 == pytest.approx(4 * area, rel=1e-4) and "as entered" in status_20


def test_segment_float32_geotiff_with_nodata_and_degrees(space, tmp_path):
    """A float32 backscatter GeoTIFF in a geographic CRS with a no-data block."""
    client, _ = space
    values = (scene(128, 160, seed=5).astype(np.float32) / 255) ** 2  # intensity-like floats
    values[:32, :48] = -9999.0
    keys = (1, 1, 0, 2, 1024, 0, 1, 2, 2048, 0, 1, 4326)
    tags = [
        (33550, "d", 3, (1e-4, 1e-4, 0.0), True),
        (33922, "d", 6, (0.0, 0.0, 0.0, 10.0, 45.0064, 0.0), True),
        (34735, "H", len(keys), keys, True),
        nodata_tag("-9999"),
    ]
    path = tmp_path / "sigma0.tif"
    tifffile.imwrite(path, values, extratags=tags)
    _, _, _, oil_percent, area, mask_path, tif_path, status, *_ = client.predict(
        handle_file(str(path)), "student-segformer", None, api_name="/segment"
    )
    mask = np.asarray(open_image(mask_path))
    assert (mask[:32, :48] == 255).all() and (mask[32:] != 255).all()  # no data stays no data
    valid = mask != 255
    assert oil_percent == pytest.approx(100 * (mask[valid] == 1).mean(), abs=1e-3)
    dx, dy = 1e-4 * 111_320 * np.cos(np.radians(45.0)), 1e-4 * 110_574  # at the scene's centre latitude
    assert area == pytest.approx((mask == 1).sum() * dx * dy / 1e6, rel=1e-3)
    assert "approximate" in status and "no-data" in status
    with tifffile.TiffFile(tif_path) as tif:
        probability = tif.pages[0].asarray()
        tags_out = {tag.code: tag.value for tag in tif.pages[0].tags}
    assert np.isnan(probability[:32, :48]).all() and not np.isnan(probability[32:]).any()
    assert tags_out[42113].strip("\x00") == "nan" and tuple(tags_out[34735]) == keys


def test_segment_rgb_png_without_spacing(space, tmp_path):
    client, _ = space
    grey = scene(96, 128, seed=4)
    path = tmp_path / "scene.png"
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path)
    overlay, _, _, oil_percent, area, mask_path, tif_path, status, *_ = client.predict(
        handle_file(str(path)), "student-segformer", None, api_name="/segment"
    )
    assert open_image(overlay).size == (256, 192)  # small scenes are shown enlarged (2x)
    assert open_image(mask_path).size == (128, 96)
    assert 0 <= oil_percent <= 100 and area is None and "unknown" in status
    with tifffile.TiffFile(tif_path) as tif:
        assert 33550 not in {tag.code for tag in tif.pages[0].tags}  # nothing invented


def test_segment_shows_the_uncertainty_map_and_the_oil_area_above_a_confidence(space, tmp_path):
    from dakter_hf.students.segment import entropy_map

    client, _ = space
    grey = scene(200, 300)
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, grey.astype(np.uint16) * 200 + 17, extratags=GEOTAGS)
    outputs = client.predict(handle_file(str(path)), "student-segformer", None, 0.8, api_name="/segment")
    _, _, _, oil_percent, area, mask_path, tif_path, status = outputs[:8]
    uncertainty, uncertainty_path, confident_percent, confident_area = outputs[8:]
    panel = np.asarray(open_image(uncertainty).convert("RGB"), dtype=np.int64)
    assert panel.shape[1] > 300 and panel.std() > 10  # a map and its colour bar, not a blank picture
    with tifffile.TiffFile(uncertainty_path) as tif:
        entropy = tif.pages[0].asarray()
        tags = {tag.code: tag.value for tag in tif.pages[0].tags}
    assert entropy.dtype == np.float32 and entropy.shape == (200, 300)
    assert tags[33550] == (10.0, 10.0, 0.0) and tuple(tags[34735]) == UTM_KEYS  # the input's georeferencing
    with tifffile.TiffFile(tif_path) as tif:
        oil = tif.pages[0].asarray()
    # the entropy of the blended probabilities
    np.testing.assert_allclose(entropy, entropy_map(np.stack([1 - oil, oil])), atol=1e-5)
    mask = np.asarray(open_image(mask_path))
    confident = (mask == 1) & (oil >= 0.8)
    assert confident_percent == pytest.approx(100 * confident.sum() / mask.size, abs=1e-3)
    assert confident_area == pytest.approx(confident.sum() * 100 / 1e6, rel=1e-4) and confident_area <= area
    assert 0 < confident_percent <= oil_percent and "Confident oil (p(oil) ≥ 0.80)" in status and "in total" in status
    # a stricter confidence counts fewer pixels; the total does not change
    strict = client.predict(handle_file(str(path)), "student-segformer", None, 0.99, api_name="/segment")
    assert strict[3] == oil_percent and strict[10] <= confident_percent
    with pytest.raises(Exception, match="greater than maximum value 0.99"):
        client.predict(handle_file(str(path)), "student-segformer", None, 1.5, api_name="/segment")


def test_example_scene_button(space):
    client, _ = space
    path, spacing = client.predict(api_name="/example_scene")
    assert open_image(path).size == (256, 256) and spacing == 10.0


# ----------------------------------------------------------------------------- tiling
def test_tiling_1000x700_matches_one_pass_where_windows_agree(space, student, tmp_path):
    """The Space's tiled mask (downloaded) vs one forward pass of the student on the whole scene."""
    client, _ = space
    model, processor = student
    grey = mosaic(700, 1000)
    path = tmp_path / "big.png"
    Image.fromarray(grey).save(path)
    mask_path = client.predict(handle_file(str(path)), "student-segformer", None, api_name="/segment")[5]
    tiled = np.asarray(open_image(mask_path))
    np.testing.assert_array_equal(
        tiled, segment_array(grey, model, processor).argmax(0)
    )  # the Space uses the shared tiling

    window = 64
    image = grey_to_unit_tensor(grey)
    predict = probability_predictor(model, "cpu")
    first = torch.full((700, 1000), -1, dtype=torch.long)
    agree = torch.ones(700, 1000, dtype=torch.bool)
    origins = plan_tiles(700, 1000, window, overlap=0.25).origins
    for start in range(0, len(origins), 32):
        batch = origins[start : start + 32]
        labels = predict(torch.stack([image[:, y : y + window, x : x + window] for y, x in batch])).argmax(1)
        for (y, x), label in zip(batch, labels):
            seen = first[y : y + window, x : x + window]
            agree[y : y + window, x : x + window] &= (seen < 0) | (seen == label)
            first[y : y + window, x : x + window] = label
    one_pass = predict_whole(image, predict).argmax(0).numpy()
    agree = agree.numpy()
    assert agree.mean() > 0.9  # the windows agree almost everywhere
    assert (tiled == 1)[agree].mean() > 0.02  # and oil there: the comparison is not all background
    mismatch = float((tiled[agree] != one_pass[agree]).mean())
    assert mismatch <= TILING_MISMATCH, (
        f"tiled and one-pass masks differ on {100 * mismatch:.2f} % of the pixels where windows agree"
    )
    oil_tiled, oil_one = tiled[agree] == 1, one_pass[agree] == 1
    iou = (oil_tiled & oil_one).sum() / (oil_tiled | oil_one).sum()
    assert iou >= TILING_OIL_IOU, f"oil IoU of tiled vs one pass where windows agree: {iou:.3f}"


# ------------------------------------------------------------------------- bad inputs
def tiff_header(width, height):
    """A little-endian TIFF claiming an 8-bit width x height image whose pixels are absent."""
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8),
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, width * height),
    ]
    ifd = (
        struct.pack("<H", len(entries))
        + b"".join(struct.pack("<HHII", *e) if e[1] == 4 else struct.pack("<HHIHH", *e, 0) for e in entries)
        + struct.pack("<I", 0)
    )
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def png_header(width, height):
    """A PNG whose IHDR claims width x height; its pixel data is never read by the app."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def corrupt_tiff():
    """A real zlib-compressed TIFF whose compressed pixel bytes are overwritten with garbage."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), compression="zlib")
    data = bytearray(buffer.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data[offset : offset + count] = b"\xde\xad\xbe\xef" * (count // 4) + b"\x00" * (count % 4)
    return bytes(data)


BAD_UPLOADS = {
    "text named .png": (b"this is not a picture\n" * 10, "scene.png", "not an image the Space reads"),
    "empty file": (b"", "scene.png", "empty"),
    "30000 x 30000 TIFF header": (tiff_header(30000, 30000), "huge.tif", "30000 x 30000"),
    "30000 x 30000 PNG header": (png_header(30000, 30000), "huge.png", "30000 x 30000"),
    "2000 x 1500 PNG over the test limit": (png_header(2000, 1500), "big.png", "2000 x 1500"),
    "corrupt TIFF": (corrupt_tiff(), "broken.tif", "corrupt"),
    "truncated TIFF": (tiff_header(64, 64), "short.tif", "corrupt"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_a_message(space, tmp_path, case):
    client, _ = space
    content, name, expected = BAD_UPLOADS[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(Exception) as caught:
        client.predict(handle_file(str(path)), "student-segformer", None, api_name="/segment")
    message = str(caught.value)
    assert expected in message and "Traceback" not in message, message


def test_missing_upload_and_bad_controls_get_a_message(space, tmp_path):
    client, _ = space
    png = tmp_path / "small.png"
    Image.fromarray(scene(64, 64)).save(png)
    cases = [
        (lambda: client.predict(None, "student-segformer", None, api_name="/segment"), "Upload a SAR image first"),
        (
            lambda: client.predict(0, 1, 4, "DDIM", 0.01, api_name="/generate"),
            "less than minimum value 0.1",
        ),  # Gradio's own check
        (lambda: client.predict(0, 17, 4, "DDIM", 1.0, api_name="/generate"), "greater than maximum value 16"),
        (
            lambda: client.predict(handle_file(__file__), "student-segformer", None, api_name="/segment"),
            "Invalid file type",
        ),  # a .py upload
        (
            lambda: client.predict(handle_file(str(png)), "no-such-student", None, api_name="/segment"),
            "no-such-student",
        ),
    ]
    for call, expected in cases:
        with pytest.raises(Exception) as caught:
            call()
        assert expected.lower() in str(caught.value).lower() and "Traceback" not in str(caught.value), str(
            caught.value
        )


def test_space_files_are_in_place():
    """What a Hugging Face Space needs next to app.py, with weights small enough to commit."""
    spaces = MODELS.parent
    readme = (spaces / "README.md").read_text(encoding="utf-8")
    header = readme.split("---")[1]
    for key in ("sdk: gradio", "app_file: app.py", "sdk_version:", "license:", "models:"):
        assert key in header, key
    assert "synthetic" in readme.lower()
    assert "dakter-hf" in (spaces / "requirements.txt").read_text(encoding="utf-8")
    for folder in ("pipeline", "student-segformer"):
        total = sum(f.stat().st_size for f in (MODELS / folder).rglob("*") if f.is_file())
        assert total < 5_000_000, (folder, total)
        assert not list((MODELS / folder).rglob("checkpoint-*")) and not list(
            (MODELS / folder).rglob("training_args.bin")
        )


def test_generate_controls_are_checked_without_gradio():
    """The pure callback checks its inputs itself too (API callers may bypass the widgets)."""
    from dakter_hf.space.generate_tab import check_generate_inputs

    assert check_generate_inputs(3.0, 2, 10, "DDIM", 2) == (3, 2, 10, 2.0)
    for args, expected in [
        ((0, 17, 10, "DDIM", 1), "Number of samples"),
        ((0, 1, 0, "DDIM", 1), "Steps"),
        ((0, 1, 10, "Heun", 1), "Sampler"),
        ((1.5, 1, 10, "DDIM", 1), "Seed"),
        ((0, 1, 10, "DDIM", 50), "temperature"),
    ]:
        with pytest.raises(ValueError, match=expected):
            check_generate_inputs(*args)


def test_app_file_and_dakter_space_command_parse_their_options():
    """spaces/app.py runs as a script (as on a Space); `dakter space` registers the same options."""
    app = MODELS.parent / "app.py"
    done = subprocess.run(
        [sys.executable, str(app), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0 and "--pipeline" in done.stdout and "--students" in done.stdout, done.stderr[-2000:]

    from dakter_hf.space.commands import REGISTRARS

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    for register in REGISTRARS:
        register(sub)
    args = parser.parse_args(["space", "--students", "a,b", "--port", "7861", "--max-pixels", "1000"])
    assert (args.students, args.port, args.max_pixels, args.pipeline) == ("a,b", 7861, 1000, None)


def test_models_come_from_arguments_then_environment_then_defaults(tmp_path):
    from dakter_hf.space.models import resolve_specs

    env = {"DAKTER_PIPELINE": "env/pipe", "DAKTER_STUDENTS": "env/s1, env/s2"}
    assert resolve_specs("arg/pipe", "arg/s", str(MODELS), env).students == ["arg/s"]
    specs = resolve_specs(None, None, str(MODELS), env)
    assert (specs.pipeline, specs.students) == ("env/pipe", ["env/s1", "env/s2"])
    specs = resolve_specs(None, None, str(MODELS), {})
    assert specs.pipeline == str(MODELS / "pipeline") and specs.students == [str(MODELS / "student-segformer")]
    assert specs.is_default(specs.pipeline) and not specs.is_default(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make_default_models"):
        resolve_specs(None, None, str(tmp_path), {})


def test_other_samplers_leave_the_shared_pipeline_alone():
    """A request with DPM-Solver++ samples through a clone: the loaded pipeline keeps its scheduler."""
    from dakter_hf.generation.loading import load_pipeline
    from dakter_hf.space import generate_tab

    pipeline = load_pipeline(str(MODELS / "pipeline"))
    before = type(pipeline.scheduler).__name__
    images, soft, masks = generate_tab.sample(pipeline, 0, 2, 4, sampler="DPM-Solver++")
    assert images.shape[0] == 2 and masks.shape == images.shape and np.isfinite(images).all()
    assert type(pipeline.scheduler).__name__ == before
    ddim, _, _ = generate_tab.sample(pipeline, 0, 2, 4, sampler="DDIM")
    assert not np.allclose(ddim, images)  # a different sampler really ran


def test_committed_pipeline_code_matches_the_package():
    """spaces/models/pipeline carries a copy of pipeline_dakter.py (for trust_remote_code); it must not drift."""
    root = str(REPO_ROOT)
    with (
        open(os.path.join(root, "pipelines", "pipeline_dakter.py"), "rb") as a,
        open(os.path.join(root, "spaces", "models", "pipeline", "pipeline_dakter.py"), "rb") as b,
    ):
        assert a.read() == b.read(), "run spaces/make_default_models.py (or copy pipelines/pipeline_dakter.py there)"
