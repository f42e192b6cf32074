"""SOS loader: the real subset (skipped when absent) and bad inputs.

The real subset is shared/data/sos next to the checkout, or $DAKTER_SOS_ROOT (tests/helpers.py).

The bad-input tests build a few synthetic files in the SOS layout with PIL
(never copies of SOS).
"""

import glob
import os
import re

import datasets
import numpy as np
import pytest
from PIL import Image

from dakter_hf.cli import main
from dakter_hf.data import SOS_CLASSES, class_names_of, load_sos
from dakter_hf.errors import DataError


@pytest.fixture(scope="session")
def palsar_train(sos_root):
    return load_sos(sos_root, sensor="palsar", split="train")


@pytest.fixture(scope="session")
def palsar_test(sos_root):
    return load_sos(sos_root, sensor="palsar", split="test")


EXPECTED_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "mask": datasets.Image(),
        "id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "classes": datasets.List(datasets.ClassLabel(names=["background", "oil"])),
    }
)


# --- the real SOS subset --------------------------------------------------------


def test_counts(palsar_train, palsar_test, sos_root):
    assert list(palsar_train) == ["train"]
    assert list(palsar_test) == ["test"]  # split='test' loads that split only
    assert len(palsar_train["train"]) == 1000
    assert len(palsar_test["test"]) == 300


def test_sentinel_train_count(sos_root):
    if not os.path.isdir(os.path.join(sos_root, "train", "sentinel")):
        pytest.skip("no train/sentinel in this SOS copy")
    data = load_sos(sos_root, sensor="sentinel", split="train")
    assert len(data["train"]) == 1000
    assert set(data["train"]["source"]) == {"sos/sentinel/train"}


def test_features(palsar_train, palsar_test):
    for data in (palsar_train, palsar_test):
        features = next(iter(data.values())).features
        assert features == EXPECTED_FEATURES
        assert isinstance(features["image"], datasets.Image)
        assert isinstance(features["mask"], datasets.Image)
        assert features["classes"] == datasets.List(datasets.ClassLabel(names=["background", "oil"]))
        assert class_names_of(data) == SOS_CLASSES == ["background", "oil"]


def test_class_ids_are_background_and_oil_only(palsar_train, palsar_test):
    for dataset in (palsar_train["train"], palsar_test["test"]):
        seen = set()
        for mask, classes in zip(dataset["mask"], dataset["classes"]):
            ids = np.asarray(mask)
            present = set(np.unique(ids).tolist())
            assert present <= {0, 1}
            assert classes == sorted(present)
            seen |= present
        assert seen == {0, 1}


def test_images_are_grey_single_channel_and_match_the_jpeg(palsar_train, sos_root):
    dataset = palsar_train["train"]
    for index in (0, 1, len(dataset) - 1):
        row = dataset[index]
        assert row["image"].mode == "L" and row["mask"].mode == "L"
        image = np.asarray(row["image"])
        assert image.shape == (256, 256) and image.dtype == np.uint8
        assert np.asarray(row["mask"]).shape == (256, 256)
        with Image.open(os.path.join(sos_root, "train", "palsar", f"{row['id']}_sat.jpg")) as raw:
            np.testing.assert_array_equal(image, np.asarray(raw.convert("L")))


def test_mask_threshold_rule(palsar_train, sos_root):
    """Mask = (PNG grey > 127), checked on a mask with soft grey edges on both sides of 127."""
    dataset = palsar_train["train"]
    ids = dataset["id"]
    chosen = None
    for index, sample_id in enumerate(ids):
        with Image.open(os.path.join(sos_root, "train", "palsar", f"{sample_id}_mask.png")) as raw:
            grey = np.asarray(raw.convert("L"))
        if np.any((grey > 127) & (grey < 255)) and np.any((grey > 0) & (grey <= 127)):
            chosen = index
            break
    if chosen is None:
        pytest.skip("no mask with soft grey edges in this SOS copy")
    mask = np.asarray(dataset[chosen]["mask"])
    np.testing.assert_array_equal(mask, (grey > 127).astype(np.uint8))
    # the rule matters here: > 0 or >= 255 would give a different mask
    assert not np.array_equal(mask, (grey > 0).astype(np.uint8))
    assert not np.array_equal(mask, (grey >= 255).astype(np.uint8))


def test_test_split_pairs_sat_and_gt(palsar_test, sos_root):
    dataset = palsar_test["test"]
    row = dataset[5]
    with Image.open(os.path.join(sos_root, "test", "palsar", "gt", f"{row['id']}_mask.png")) as raw:
        expected = (np.asarray(raw.convert("L")) > 127).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(row["mask"]), expected)
    with Image.open(os.path.join(sos_root, "test", "palsar", "sat", f"{row['id']}_sat.jpg")) as raw:
        np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(raw.convert("L")))


def test_ids_match_file_names_and_source(palsar_train, palsar_test, sos_root):
    train_stems = sorted(
        os.path.basename(p)[: -len("_sat.jpg")]
        for p in glob.glob(os.path.join(sos_root, "train", "palsar", "*_sat.jpg"))
    )
    test_stems = sorted(
        os.path.basename(p)[: -len("_sat.jpg")]
        for p in glob.glob(os.path.join(sos_root, "test", "palsar", "sat", "*_sat.jpg"))
    )
    assert palsar_train["train"]["id"] == train_stems  # sorted, one per image file
    assert palsar_test["test"]["id"] == test_stems
    assert set(palsar_train["train"]["source"]) == {"sos/palsar/train"}
    assert set(palsar_test["test"]["source"]) == {"sos/palsar/test"}


# --- bad inputs on a few synthetic files in the SOS layout ------------------------


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _write_pair(image_dir, mask_dir, sample_id, size=(16, 16), mask_size=None, mask_values=None, seed=0):
    """A synthetic SOS pair: RGB JPEG with R=G=B and an RGB PNG mask with R=G=B (as SOS stores them)."""
    rng = np.random.default_rng(seed)
    height, width = size
    grey = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    Image.fromarray(grey).convert("RGB").save(os.path.join(image_dir, f"{sample_id}_sat.jpg"), quality=95)
    mh, mw = mask_size or size
    if mask_values is None:
        mask_values = np.zeros((mh, mw), dtype=np.uint8)
        mask_values[: mh // 2, : mw // 2] = 255
    Image.fromarray(np.asarray(mask_values, dtype=np.uint8)).convert("RGB").save(
        os.path.join(mask_dir, f"{sample_id}_mask.png")
    )
    return os.path.join(image_dir, f"{sample_id}_sat.jpg"), os.path.join(mask_dir, f"{sample_id}_mask.png")


def _train_dir(root, sensor="palsar"):
    return str(root / "train" / sensor)


def test_synthetic_layout_loads_with_threshold(tmp_path, private_cache):
    root = tmp_path / "sos"
    grey_mask = np.array([[0, 127], [128, 255]], dtype=np.uint8).repeat(4, axis=0).repeat(4, axis=1)
    _write_pair(_train_dir(root), _train_dir(root), "7", size=(8, 8), mask_values=grey_mask)
    _write_pair(_train_dir(root), _train_dir(root), "3", size=(8, 8), seed=1)
    _write_pair(str(root / "test" / "palsar" / "sat"), str(root / "test" / "palsar" / "gt"), "9", size=(8, 8), seed=2)
    data = load_sos(str(root), sensor="palsar")  # split=None: every split present
    assert sorted(data) == ["test", "train"]
    assert data["train"]["id"] == ["3", "7"]
    assert data["test"]["id"] == ["9"]
    mask = np.asarray(data["train"][1]["mask"])
    np.testing.assert_array_equal(mask, (grey_mask > 127).astype(np.uint8))
    assert data["train"][1]["classes"] == [0, 1]
    only_test = load_sos(str(root), sensor="palsar", split="test")
    assert list(only_test) == ["test"]


def test_missing_root(tmp_path):
    missing = tmp_path / "no_such_root"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        load_sos(str(missing))


def test_a_broken_sos_folder_is_one_line_naming_the_file_through_dakter_data(tmp_path, private_cache, capsys):
    root = tmp_path / "sos"
    _write_pair(_train_dir(root), _train_dir(root), "1")
    _, bad_mask = _write_pair(_train_dir(root), _train_dir(root), "2", seed=1)
    with open(bad_mask, "wb") as handle:
        handle.write(b"\x89PNG garbage")
    out = tmp_path / "out"
    assert main(["data", "--source", f"sos:{root}", "--sensor", "palsar", "--split", "train", "--out", str(out)]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    error = stderr.strip().splitlines()[-1]  # the lines before it: datasets' progress bars
    assert error.startswith("dakter data: error: ") and bad_mask in error
    assert not out.exists()


def test_missing_sensor_folder(tmp_path, private_cache):
    root = tmp_path / "sos"
    _write_pair(_train_dir(root), _train_dir(root), "1")
    with pytest.raises(DataError, match=re.escape(os.path.join(str(root), "train", "sentinel"))):
        load_sos(str(root), sensor="sentinel", split="train")
    with pytest.raises(DataError, match="no SOS split"):
        load_sos(str(root), sensor="sentinel")
    # test split asked for but absent
    with pytest.raises(DataError, match=re.escape(os.path.join(str(root), "test", "palsar"))):
        load_sos(str(root), sensor="palsar", split="test")


def test_test_split_without_gt_folder(tmp_path, private_cache):
    root = tmp_path / "sos"
    _write_pair(str(root / "test" / "palsar" / "sat"), str(root / "test" / "palsar" / "sat"), "1")
    with pytest.raises(DataError, match="gt"):
        load_sos(str(root), sensor="palsar", split="test")


def test_image_without_mask(tmp_path, private_cache):
    root = tmp_path / "sos"
    _write_pair(_train_dir(root), _train_dir(root), "1")
    image_path, mask_path = _write_pair(_train_dir(root), _train_dir(root), "2", seed=1)
    os.remove(mask_path)
    with pytest.raises(DataError) as error:
        load_sos(str(root), split="train")
    assert image_path in str(error.value)
    assert mask_path in str(error.value)


def test_mask_of_another_size(tmp_path, private_cache):
    root = tmp_path / "sos"
    _write_pair(_train_dir(root), _train_dir(root), "1")
    _, bad_mask = _write_pair(_train_dir(root), _train_dir(root), "2", size=(16, 16), mask_size=(16, 12), seed=1)
    with pytest.raises(DataError) as error:
        load_sos(str(root), split="train")
    assert bad_mask in str(error.value)


def test_unreadable_image(tmp_path, private_cache):
    root = tmp_path / "sos"
    _write_pair(_train_dir(root), _train_dir(root), "1")
    bad_image, _ = _write_pair(_train_dir(root), _train_dir(root), "2", seed=1)
    with open(bad_image, "w") as handle:
        handle.write("this is not a JPEG, just some garbage text\n" * 10)
    with pytest.raises(ValueError) as error:
        load_sos(str(root), split="train")
    assert isinstance(error.value, DataError)
    assert bad_image in str(error.value)


def test_unreadable_mask(tmp_path, private_cache):
    root = tmp_path / "sos"
    _, bad_mask = _write_pair(_train_dir(root), _train_dir(root), "1")
    with open(bad_mask, "wb") as handle:
        handle.write(b"\x89PNG garbage")
    with pytest.raises(DataError) as error:
        load_sos(str(root), split="train")
    assert bad_mask in str(error.value)


def test_empty_folder(tmp_path, private_cache):
    root = tmp_path / "sos"
    os.makedirs(_train_dir(root))
    with open(os.path.join(_train_dir(root), "notes.txt"), "w") as handle:
        handle.write("no images here")
    with pytest.raises(DataError, match="empty") as error:
        load_sos(str(root), split="train")
    assert _train_dir(root) in str(error.value)


@pytest.mark.parametrize(
    "kwargs", [{"sensor": "radarsat"}, {"sensor": "PALSAR"}, {"split": "validation"}, {"split": "Train"}]
)
def test_invalid_sensor_or_split(tmp_path, kwargs):
    root = tmp_path / "sos"
    os.makedirs(_train_dir(root))
    with pytest.raises(ValueError, match=re.escape(repr(next(iter(kwargs.values()))))):
        load_sos(str(root), **kwargs)
