"""OSD loader: layout, colour table, patch grid, all-sea thinning, errors (tiny files made here)."""

import os
import random

import datasets
import numpy as np
import pytest
from PIL import Image

from dakter_hf.data import OSD_CLASSES, class_names_of, load_osd, patch_origins
from dakter_hf.data.osd import colours_to_ids, select_all_sea
from dakter_hf.errors import DataError


# the OSD colour table, written out (not imported) so a wrong table in the loader fails here
BLACK, CYAN, RED, BROWN, GREEN = (0, 0, 0), (0, 255, 255), (255, 0, 0), (153, 76, 0), (0, 153, 0)
COLOURS = np.array([BLACK, CYAN, RED, BROWN, GREEN], dtype=np.uint8)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Each test builds its datasets in its own Arrow cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _write(root, split, stem, image, mask_rgb):
    base = os.path.join(root, split) if split else str(root)
    os.makedirs(os.path.join(base, "images"), exist_ok=True)
    os.makedirs(os.path.join(base, "labels"), exist_ok=True)
    image_path = os.path.join(base, "images", stem + ".jpg")
    mask_path = os.path.join(base, "labels", stem + ".png")
    if image is not None:
        Image.fromarray(np.asarray(image, dtype=np.uint8), mode="L").save(image_path, quality=95)
    if mask_rgb is not None:
        Image.fromarray(np.asarray(mask_rgb, dtype=np.uint8), mode="RGB").save(mask_path)
    return image_path, mask_path


def _noise(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8)


def _sea(h, w):
    return np.zeros((h, w, 3), dtype=np.uint8)


def _decoded(path):
    return np.asarray(Image.open(path).convert("L"))


def _arrays(dataset):
    return {row["id"]: (np.asarray(row["image"]), np.asarray(row["mask"])) for row in dataset}


# ---------------------------------------------------------------- patch grid


def test_patch_origins():
    assert patch_origins(650, 256) == [0, 256, 394]
    assert patch_origins(1250, 256) == [0, 256, 512, 768, 994]
    assert patch_origins(512, 256) == [0, 256]
    assert patch_origins(256, 256) == [0]
    assert patch_origins(257, 256) == [0, 1]
    with pytest.raises(ValueError):
        patch_origins(255, 256)


def test_full_size_image_gives_15_patches(tmp_path):
    image_path, _ = _write(tmp_path, "train", "img_0001", _noise(650, 1250), _sea(650, 1250))
    dataset = load_osd(str(tmp_path), keep_all_sea_fraction=1.0)["train"]
    assert len(dataset) == 15
    assert sorted(dataset["id"]) == sorted(f"img_0001_r{r}_c{c}" for r in range(3) for c in range(5))
    source = _decoded(image_path)
    row = dataset[[i for i, name in enumerate(dataset["id"]) if name == "img_0001_r2_c4"][0]]
    np.testing.assert_array_equal(np.asarray(row["image"]), source[394:650, 994:1250])
    assert np.asarray(row["image"]).shape == (256, 256)


def test_patches_are_the_right_crops_with_class_ids(tmp_path):
    h, w, p = 40, 70, 16
    ids = np.zeros((h, w), dtype=np.uint8)
    ids[2:12, 3:30] = 1
    ids[20:38, 0:10] = 2
    ids[30:33, 50:52] = 3
    ids[:, 60:] = 4
    rgb = COLOURS[ids]
    image_path, _ = _write(tmp_path, "train", "scene", _noise(h, w, 1), rgb)
    dataset = load_osd(str(tmp_path), patch_size=p, keep_all_sea_fraction=1.0)["train"]
    assert class_names_of(dataset) == OSD_CLASSES
    rows, cols = patch_origins(h, p), patch_origins(w, p)
    assert (rows, cols) == ([0, 16, 24], [0, 16, 32, 48, 54])
    got = _arrays(dataset)
    assert len(got) == 15
    source = _decoded(image_path)
    for r, y in enumerate(rows):
        for c, x in enumerate(cols):
            image, mask = got[f"scene_r{r}_c{c}"]
            np.testing.assert_array_equal(image, source[y : y + p, x : x + p])
            np.testing.assert_array_equal(mask, ids[y : y + p, x : x + p])
    assert set(dataset["source"]) == {"osd/train"}
    assert sorted({k for row in dataset["classes"] for k in row}) == [0, 1, 2, 3, 4]


def test_colour_table_and_off_table_colours():
    rgb = COLOURS[None].copy()
    np.testing.assert_array_equal(colours_to_ids(rgb), [[0, 1, 2, 3, 4]])
    rgb[0, 1] = (0, 254, 255)
    with pytest.raises(DataError, match=r"somefile\.png.*\(0, 254, 255\)"):
        colours_to_ids(rgb, "somefile.png")


def test_off_table_colour_names_file_and_colour(tmp_path):
    rgb = _sea(32, 32)
    rgb[5, 5] = (10, 20, 30)
    rgb[6, 6] = (255, 255, 255)
    _write(tmp_path, "train", "bad", _noise(32, 32), rgb)
    message = _refusal(tmp_path)
    assert "bad.png" in message and "(10, 20, 30)" in message and "(255, 255, 255)" in message


# ---------------------------------------------------------------- 20 % of all-sea patches


def _ten_sea_patches_and_five_oily(root, seed_image=0):
    # 'calm': 2 x 5 patches of 16, all sea -> 10 all-sea patches
    _write(root, "train", "calm", _noise(32, 80, seed_image), _sea(32, 80))
    # 'oily': oil in every one of its 1 x 5 patches -> always kept
    oily = _sea(16, 80)
    oily[8, ::16] = CYAN
    _write(root, "train", "oily", _noise(16, 80, seed_image + 1), oily)


def test_keeps_20_percent_of_all_sea_patches(tmp_path):
    _ten_sea_patches_and_five_oily(tmp_path)
    dataset = load_osd(str(tmp_path), patch_size=16, seed=0)["train"]
    names = dataset["id"]
    calm = [n for n in names if n.startswith("calm_")]
    assert len(calm) == 2
    assert sorted(n for n in names if n.startswith("oily_")) == [f"oily_r0_c{c}" for c in range(5)]
    for row in dataset:
        if row["id"].startswith("calm_"):
            assert not np.asarray(row["mask"]).any()


def test_selection_is_deterministic_and_seeded(tmp_path, monkeypatch):
    _ten_sea_patches_and_five_oily(tmp_path)

    def calm(seed, cache):
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / cache))
        ids = load_osd(str(tmp_path), patch_size=16, seed=seed)["train"]["id"]
        return tuple(sorted(n for n in ids if n.startswith("calm_")))

    first = calm(0, "a")
    assert calm(0, "b") == first  # rebuilt from scratch in another cache
    by_seed = {calm(seed, f"s{seed}") for seed in range(1, 7)}
    assert len(by_seed | {first}) > 1


def test_selection_rule_is_order_free_and_rounded():
    keys = [(f"img{i}", r, c) for i in range(3) for r in range(3) for c in range(5)]  # 45 keys
    chosen = select_all_sea(keys, 0.2, seed=3, split="train")
    assert len(chosen) == 9 and chosen <= set(keys)
    shuffled = keys[:]
    random.Random(1).shuffle(shuffled)
    assert select_all_sea(shuffled, 0.2, seed=3, split="train") == chosen
    assert len(select_all_sea(keys[:7], 0.2, 0, "train")) == 1  # 1.4 -> 1
    assert len(select_all_sea(keys[:13], 0.2, 0, "train")) == 3  # 2.6 -> 3
    assert select_all_sea(keys, 0.0, 0, "train") == set()
    assert select_all_sea(keys, 1.0, 0, "train") == set(keys)


def test_all_patches_all_sea_and_none_kept_is_an_error(tmp_path):
    _write(tmp_path, "train", "calm", _noise(32, 32), _sea(32, 32))
    with pytest.raises(DataError, match="empty dataset"):
        load_osd(str(tmp_path), patch_size=16, keep_all_sea_fraction=0.0)


# ---------------------------------------------------------------- layouts


def test_split_folders_and_single_folder_layout(tmp_path):
    oily = _sea(16, 16)
    oily[0, 0] = CYAN
    _write(tmp_path / "osd", "train", "a", _noise(16, 16), oily)
    _write(tmp_path / "osd", "test", "b", _noise(16, 16), oily)
    both = load_osd(str(tmp_path / "osd"), patch_size=16)
    assert sorted(both) == ["test", "train"]
    assert both["test"]["id"] == ["b_r0_c0"] and both["test"]["source"] == ["osd/test"]
    assert list(load_osd(str(tmp_path / "osd"), split="test", patch_size=16)) == ["test"]
    with pytest.raises(DataError, match="validation"):
        load_osd(str(tmp_path / "osd"), split="validation", patch_size=16)

    _write(tmp_path / "flat", None, "c", _noise(16, 16), oily)
    os.makedirs(tmp_path / "flat" / "labels_1D")  # ignored
    assert list(load_osd(str(tmp_path / "flat"), patch_size=16)) == ["train"]
    flat = load_osd(str(tmp_path / "flat"), split="test", patch_size=16)
    assert list(flat) == ["test"] and flat["test"]["source"] == ["osd/test"]


# ---------------------------------------------------------------- bad input


def test_missing_folders(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_osd(str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "empty_root")
    with pytest.raises(DataError, match="empty_root"):
        load_osd(str(tmp_path / "empty_root"))
    os.makedirs(tmp_path / "nolabels" / "train" / "images")
    with pytest.raises(DataError, match="labels"):
        load_osd(str(tmp_path / "nolabels"))


def _refusal(root, match=None, patch_size=16):
    """The message of the DataError (matching `match`) that load_osd raises on `root`."""
    with pytest.raises(DataError, match=match) as info:
        load_osd(str(root), patch_size=patch_size)
    return str(info.value)


def test_image_without_mask(tmp_path):
    image_path, mask_path = _write(tmp_path, "train", "lonely", _noise(16, 16), None)
    message = _refusal(tmp_path)
    assert image_path in message and mask_path in message


def test_mask_of_another_size(tmp_path):
    _, mask_path = _write(tmp_path, "train", "skew", _noise(32, 48), _sea(32, 40))
    assert mask_path in _refusal(tmp_path, "expected the same size")


def test_unreadable_files(tmp_path):
    image_path, _ = _write(tmp_path / "a", "train", "broken", None, _sea(16, 16))
    with open(image_path, "wb") as handle:
        handle.write(b"not a jpeg at all")
    assert image_path in _refusal(tmp_path / "a", "cannot read")

    _, mask_path = _write(tmp_path / "b", "train", "broken", _noise(16, 16), None)
    with open(mask_path, "wb") as handle:
        handle.write(b"\x89PNG garbage")
    assert mask_path in _refusal(tmp_path / "b", "cannot read")


def test_empty_images_folder(tmp_path):
    os.makedirs(tmp_path / "train" / "images")
    os.makedirs(tmp_path / "train" / "labels")
    with pytest.raises(DataError, match="empty dataset"):
        load_osd(str(tmp_path))


def test_image_smaller_than_patch(tmp_path):
    image_path, _ = _write(tmp_path, "train", "tiny", _noise(300, 200), _sea(300, 200))
    assert image_path in _refusal(tmp_path, "smaller than", patch_size=256)


def test_300x520_image_with_256_patches(tmp_path):
    mask = _sea(300, 520)
    mask[299, :] = GREEN  # the last row of patches touches land; the first does not
    _write(tmp_path, "train", "small", _noise(300, 520), mask)
    dataset = load_osd(str(tmp_path), keep_all_sea_fraction=0.0)["train"]
    # rows [0, 44], cols [0, 256, 264]: row 0 is all sea (dropped), row 1 holds land
    assert sorted(dataset["id"]) == ["small_r1_c0", "small_r1_c1", "small_r1_c2"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        load_osd(str(tmp_path), patch_size=0)
    with pytest.raises(ValueError):
        load_osd(str(tmp_path), keep_all_sea_fraction=1.5)
