"""Generic images/ + masks/ folder loader, on small synthetic files made here with PIL."""

import os
import re

import datasets
import numpy as np
import pytest
from PIL import Image

from dakter_hf.data import class_names_of, load_folder
from dakter_hf.errors import DataError


CLASSES = ["sea", "oil", "ship"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _mask(seed, size=(8, 12), num_classes=3):
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_classes, size=size).astype(np.uint8)


def _image(seed, size=(8, 12)):
    rng = np.random.default_rng(100 + seed)
    return rng.integers(0, 256, size=size, dtype=np.uint8)


def _write(base, name, image, mask, image_ext=".png", rgb_image=False):
    os.makedirs(os.path.join(base, "images"), exist_ok=True)
    os.makedirs(os.path.join(base, "masks"), exist_ok=True)
    picture = Image.fromarray(image)
    if rgb_image:
        picture = picture.convert("RGB")
    image_path = os.path.join(base, "images", name + image_ext)
    picture.save(image_path)
    mask_path = os.path.join(base, "masks", name + ".png")
    Image.fromarray(mask).save(mask_path)
    return image_path, mask_path


def test_without_split_folders(tmp_path):
    root = tmp_path / "scenes"
    written = {}
    for seed, name in enumerate(["b", "a", "c"]):
        image, mask = _image(seed), _mask(seed)
        _write(str(root), name, image, mask)
        written[name] = (image, mask)
    # files that are not images are ignored
    (root / "images" / "README.txt").write_text("not an image")
    data = load_folder(str(root), CLASSES)
    assert list(data) == ["train"]
    dataset = data["train"]
    assert dataset["id"] == ["a", "b", "c"]
    assert set(dataset["source"]) == {"folder/scenes/train"}
    assert class_names_of(data) == CLASSES
    assert dataset.features["classes"] == datasets.List(datasets.ClassLabel(names=CLASSES))
    for row in dataset:
        image, mask = written[row["id"]]
        assert row["image"].mode == "L" and row["mask"].mode == "L"
        np.testing.assert_array_equal(np.asarray(row["image"]), image)
        # pixel value = class id, kept as is (no thresholding, no rescaling)
        np.testing.assert_array_equal(np.asarray(row["mask"]), mask)
        assert row["classes"] == sorted(np.unique(mask).tolist())
    # split="train" is the only split of a folder without split folders
    assert list(load_folder(str(root), CLASSES, split="train")) == ["train"]
    with pytest.raises(DataError, match="only split 'train'"):
        load_folder(str(root), CLASSES, split="test")


def test_with_split_folders(tmp_path):
    root = tmp_path / "ds"
    _write(str(root / "train"), "t1", _image(1), _mask(1))
    _write(str(root / "train"), "t2", _image(2), _mask(2))
    _write(str(root / "test"), "x1", _image(3), _mask(3))
    _write(str(root / "validation"), "v1", _image(4), _mask(4))
    data = load_folder(str(root), CLASSES)
    assert sorted(data) == ["test", "train", "validation"]
    assert data["train"]["id"] == ["t1", "t2"]
    assert data["test"]["id"] == ["x1"]
    assert data["validation"]["id"] == ["v1"]
    assert set(data["test"]["source"]) == {"folder/ds/test"}
    np.testing.assert_array_equal(np.asarray(data["validation"][0]["mask"]), _mask(4))
    only_test = load_folder(str(root), CLASSES, split="test")
    assert list(only_test) == ["test"]
    assert only_test["test"]["id"] == ["x1"]


def test_missing_split_folder(tmp_path):
    root = tmp_path / "ds"
    _write(str(root / "train"), "t1", _image(1), _mask(1))
    with pytest.raises(DataError, match="validation"):
        load_folder(str(root), CLASSES, split="validation")


def test_rgb_and_jpeg_images_are_read_grey(tmp_path):
    root = tmp_path / "rgb"
    image = np.full((8, 12), 90, dtype=np.uint8)
    _write(str(root), "a", image, _mask(0), image_ext=".jpg", rgb_image=True)
    row = load_folder(str(root), CLASSES)["train"][0]
    assert row["image"].mode == "L"
    assert np.abs(np.asarray(row["image"]).astype(int) - 90).max() <= 2  # JPEG rounding only


def test_class_id_too_large(tmp_path):
    root = tmp_path / "ds"
    _write(str(root), "ok", _image(0), _mask(0, num_classes=2))
    mask = _mask(1, num_classes=2)
    mask[0, 0] = 2
    _, bad_mask = _write(str(root), "zbad", _image(1), mask)
    with pytest.raises(DataError) as error:
        load_folder(str(root), ["background", "oil"])
    message = str(error.value)
    assert bad_mask in message
    assert "class id value(s) [2]" in message
    # the same files are fine with three classes
    data = load_folder(str(root), CLASSES)
    assert data["train"]["classes"][1] == [0, 1, 2]


def test_mask_stored_as_0_255_is_not_rescaled(tmp_path):
    """A 0/255 mask in a folder dataset is an error (class 255), not silently thresholded."""
    root = tmp_path / "ds"
    _write(str(root), "a", _image(0), (_mask(0, num_classes=2) * 255).astype(np.uint8))
    with pytest.raises(DataError, match="255"):
        load_folder(str(root), ["background", "oil"])


def test_missing_masks_dir(tmp_path):
    root = tmp_path / "ds"
    os.makedirs(root / "images")
    Image.fromarray(_image(0)).save(root / "images" / "a.png")
    with pytest.raises(DataError, match=re.escape(str(root / "masks"))):
        load_folder(str(root), CLASSES)


def test_missing_images_dir_and_root(tmp_path):
    root = tmp_path / "ds"
    os.makedirs(root / "masks")
    with pytest.raises(DataError, match=re.escape(str(root / "images"))):
        load_folder(str(root), CLASSES)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nowhere"))):
        load_folder(str(tmp_path / "nowhere"), CLASSES)


def test_image_without_mask_and_size_mismatch(tmp_path):
    root = tmp_path / "ds"
    image_path, mask_path = _write(str(root), "a", _image(0), _mask(0))
    os.remove(mask_path)
    with pytest.raises(DataError) as error:
        load_folder(str(root), CLASSES)
    assert image_path in str(error.value) and mask_path in str(error.value)

    Image.fromarray(_mask(0, size=(8, 10))).save(mask_path)
    with pytest.raises(DataError) as error:
        load_folder(str(root), CLASSES)
    assert mask_path in str(error.value)


def test_empty_images_folder(tmp_path):
    root = tmp_path / "ds"
    os.makedirs(root / "images")
    os.makedirs(root / "masks")
    with pytest.raises(DataError, match="empty"):
        load_folder(str(root), CLASSES)


def test_bad_class_names(tmp_path):
    root = tmp_path / "ds"
    _write(str(root), "a", _image(0), _mask(0, num_classes=1))
    with pytest.raises(ValueError):
        load_folder(str(root), ["only"])
    with pytest.raises(ValueError):
        load_folder(str(root), ["sea", "sea"])


def test_palette_mask_keeps_class_indices(tmp_path):
    root = tmp_path / "ds"
    mask = _mask(0)
    _write(str(root), "a", _image(0), np.zeros_like(mask))
    palette_mask = Image.fromarray(mask)  # mode L; putpalette turns it into P with the same indices
    palette_mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (3 * 253))
    palette_mask.save(root / "masks" / "a.png")
    with Image.open(root / "masks" / "a.png") as check:
        assert check.mode == "P"
        np.testing.assert_array_equal(np.asarray(check), mask)  # the file holds the class ids
    data = load_folder(str(root), CLASSES)
    np.testing.assert_array_equal(np.asarray(data["train"][0]["mask"]), mask)
