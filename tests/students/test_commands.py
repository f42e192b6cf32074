"""`dakter segment` (tiled, any size) and `dakter evaluate` (Table-4 row + JSON)."""

import json

import numpy as np
import pytest
import torch
from geotiff_helpers import GEOTAGS, UTM_KEYS, nodata_tag
from PIL import Image
from student_helpers import ID2LABEL, TINY_OVERRIDES

from dakter_hf.cli import main
from dakter_hf.data.save import save_dataset
from dakter_hf.data.simulate import simulate_sar
from dakter_hf.students.inference import student_predictor
from dakter_hf.students.models import build_student, make_image_processor


WINDOW = 32


def _fit_a_little(model, steps=40):
    """A few steps on synthetic scenes, so the student's decisions are clear-cut (untrained, it says 0.5)."""
    from dakter_hf.students.data import build_training_samples, student_collate
    from dakter_hf.students.losses import student_loss

    samples = build_training_samples(simulate_sar(8, num_classes=2, size=32, seed=1)["train"], WINDOW, augment=False)
    batch = student_collate([samples[i] for i in range(len(samples))])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = student_loss(model(pixel_values=batch["pixel_values"]).logits, batch["labels"]).per_sample.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("student")
    model = build_student("segformer-b0", ID2LABEL, seed=0, **TINY_OVERRIDES["segformer-b0"])
    _fit_a_little(model)
    model.config.dakter_resolution = WINDOW
    model.config.dakter_pixel_scale = 1.0
    model.save_pretrained(path)
    make_image_processor(model, WINDOW).save_pretrained(path)
    return str(path), model


def test_segment_large_image_agrees_with_single_forward_passes(student_dir, tmp_path):
    folder, model = student_dir
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (70, 90), dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "scene.png")
    assert (
        main(
            [
                "segment",
                str(tmp_path / "scene.png"),
                "--model",
                folder,
                "--out",
                str(tmp_path / "out"),
                "--overlap",
                "0.25",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    probabilities = np.load(tmp_path / "out" / "scene_probabilities.npy").astype(np.float32)
    mask = np.asarray(Image.open(tmp_path / "out" / "scene_mask.png"))
    assert probabilities.shape == (2, 70, 90) and mask.shape == (70, 90)
    assert np.allclose(probabilities.sum(0), 1, atol=2e-3)
    decided = np.abs(probabilities[1] - probabilities[0]) > 4e-3  # beyond float16 rounding of the stored map
    assert decided.mean() > 0.5 and np.array_equal(mask[decided], probabilities.argmax(0)[decided])
    # windows start every 24 px; pixels [0:24, 0:24] are seen by the window at (0, 0) alone
    predict = student_predictor(model, "cpu")
    image = torch.from_numpy(grey.astype(np.float32) / 127.5 - 1)[None, None]
    for y, x in [(0, 0), (38, 58)]:  # first window, and the last (flush with the bottom-right border)
        single = predict(image[..., y : y + WINDOW, x : x + WINDOW]).softmax(1)[0].numpy()
        tiled = probabilities[:, y : y + WINDOW, x : x + WINDOW]
        alone = (
            (slice(0, 24), slice(0, 24))
            if (y, x) == (0, 0)
            else (slice(WINDOW - 14, WINDOW), slice(WINDOW - 10, WINDOW))
        )
        assert np.allclose(tiled[:, alone[0], alone[1]], single[:, alone[0], alone[1]], atol=2e-3)  # float16 storage
        # where windows overlap the blend stays close to either pass
        clear = np.abs(single[1] - single[0]) > 0.02
        assert (tiled.argmax(0) == single.argmax(0))[clear].mean() > 0.9


def test_segment_reads_folders_and_refuses_bad_inputs(student_dir, tmp_path, capsys):
    folder, _ = student_dir
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for name in ("a.png", "b.jpg"):
        Image.fromarray(np.full((40, 40), 90, np.uint8), mode="L").save(scenes / name)
    (scenes / "notes.txt").write_text("not an image")
    assert main(["segment", str(scenes), "--model", folder, "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "a_mask.png").is_file() and (tmp_path / "o" / "b_oil.png").is_file()
    assert main(["segment", str(tmp_path / "absent.png"), "--model", folder, "--out", str(tmp_path / "o2")]) == 2
    assert "absent.png" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert main(["segment", str(tmp_path / "broken.png"), "--model", folder, "--out", str(tmp_path / "o3")]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert (
        main(["segment", str(scenes / "a.png"), "--model", folder, "--out", str(tmp_path / "o4"), "--overlap", "1.5"])
        == 2
    )
    assert "--overlap" in capsys.readouterr().err
    assert (
        main(
            [
                "segment",
                str(scenes / "a.png"),
                "--model",
                folder,
                "--out",
                str(tmp_path / "o4"),
                "--pixel-scale",
                "abc",
            ]
        )
        == 2
    )
    assert "--pixel-scale" in capsys.readouterr().err
    assert (
        main(["segment", str(scenes / "a.png"), "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path / "o5")])
        == 2
    )
    assert "--model" in capsys.readouterr().err


def test_evaluate_prints_table4_and_writes_json(student_dir, tmp_path, capsys):
    folder, model = student_dir
    data = simulate_sar(2, num_classes=2, size=32, seed=3, num_test_samples=5)
    save_dataset(data, str(tmp_path / "data"))
    out = tmp_path / "metrics.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                folder,
                "--data",
                str(tmp_path / "data"),
                "--split",
                "test",
                "--json",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| mIoU | mF1 |" in printed and "IoU oil" in printed
    record = json.loads(out.read_text())
    # independent check: oil IoU from a plain loop over the test images
    predict = student_predictor(model, "cpu")
    inter = union = 0
    for row in data["test"]:
        image = torch.from_numpy(np.asarray(row["image"], dtype=np.float32) / 127.5 - 1)[None, None]
        predicted = predict(image)[0].argmax(0).numpy()
        truth = np.asarray(row["mask"])
        inter += int(((predicted == 1) & (truth == 1)).sum())
        union += int(((predicted == 1) | (truth == 1)).sum())
    assert record["per_category_iou"][1] == pytest.approx(inter / union)
    assert record["num_images"] == 5 and record["split"] == "test"


def test_evaluate_constant_baseline(tmp_path, capsys):
    data = simulate_sar(2, num_classes=2, size=32, seed=4, num_test_samples=3)
    save_dataset(data, str(tmp_path / "data"))
    out = tmp_path / "background.json"
    assert (
        main(["evaluate", "--constant", "0", "--data", str(tmp_path / "data"), "--split", "test", "--json", str(out)])
        == 0
    )
    record = json.loads(out.read_text())
    masks = np.stack([np.asarray(m) for m in data["test"]["mask"]])
    assert record["per_category_iou"][0] == pytest.approx((masks == 0).mean())
    assert record["per_category_iou"][1] == 0.0 and record["per_category_precision"][1] == 0.0
    assert main(["evaluate", "--constant", "7", "--data", str(tmp_path / "data"), "--split", "test"]) == 2
    assert "--constant" in capsys.readouterr().err


def test_entropy_map_in_nats():
    from dakter_hf.students.segment import entropy_map

    p = np.zeros((3, 1, 4), np.float32)
    p[:, 0, 0] = 1 / 3  # uniform: ln 3
    p[1, 0, 1] = 1.0  # certain: 0
    p[:, 0, 2] = (0.7, 0.2, 0.1)
    p[:, 0, 3] = np.nan  # no data
    entropy = entropy_map(p)
    assert entropy.dtype == np.float32 and entropy.shape == (1, 4)
    mixed = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    np.testing.assert_allclose(entropy[0, :3], [np.log(3), 0.0, mixed], rtol=1e-6)
    assert np.isnan(entropy[0, 3])


def test_segment_writes_an_uncertainty_geotiff_with_the_input_georeferencing(student_dir, tmp_path, capsys):
    import tifffile

    from dakter_hf.students.segment import entropy_map, segment_array

    folder, model = student_dir
    grey = np.random.default_rng(1).integers(0, 256, (50, 70), dtype=np.uint8)
    values = grey.astype(np.float32)
    values[:10, :12] = -9999.0  # a no-data block
    tifffile.imwrite(tmp_path / "scene.tif", values, extratags=GEOTAGS + [nodata_tag("-9999")])
    argv = [
        "segment",
        str(tmp_path / "scene.tif"),
        "--model",
        folder,
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    assert "mean entropy" in capsys.readouterr().out
    maps = {}
    for name in ("entropy", "oil_probability"):
        with tifffile.TiffFile(tmp_path / "out" / f"scene_{name}.tif") as tif:
            page = tif.pages[0]
            maps[name] = page.asarray()
            tags = {tag.code: tag.value for tag in page.tags}
        assert maps[name].dtype == np.float32 and maps[name].shape == (50, 70)
        assert tags[33550] == (10.0, 10.0, 0.0) and tags[33922] == GEOTAGS[1][3] and tuple(tags[34735]) == UTM_KEYS
        assert tags[34737].startswith("WGS 84 / UTM zone 33N") and tags[42113].strip("\x00") == "nan"
        assert np.isnan(maps[name][:10, :12]).all() and not np.isnan(maps[name][10:]).any()
    entropy, oil = maps["entropy"], maps["oil_probability"]
    assert 0 <= np.nanmin(entropy) and np.nanmax(entropy) <= np.log(2) + 1e-6
    # the entropy of the blended probabilities (the oil GeoTIFF holds the blend), pixel by pixel
    blended = np.stack([1 - oil, oil])
    np.testing.assert_allclose(entropy, entropy_map(blended), atol=1e-5, equal_nan=True)
    # and the same as the scene segmented in this process (the no-data block reads as grey 0 there)
    from dakter_hf.data.raster import read_grey
    from dakter_hf.students.segment import student_normalization

    scene = read_grey(str(tmp_path / "scene.tif"), student_normalization(model))
    again = entropy_map(segment_array(scene.image, model, device="cpu"))
    np.testing.assert_allclose(entropy[10:], again[10:], atol=1e-5)
