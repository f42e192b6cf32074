"""Synthetic SAR scenes: schema, classes, determinism, radiometry (dark oil, Gamma speckle)."""

import time

import datasets
import numpy as np
import pytest

from dakter_hf.data import OSD_CLASSES, SOS_CLASSES, class_names_of, simulate_sar
from dakter_hf.data.simulate import simulate_scene


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Each test builds its datasets in its own Arrow cache (so nothing is read back from an old run)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def _images(dataset):
    return [np.asarray(row["image"]) for row in dataset]


def test_schema_shapes_and_ids():
    data = simulate_sar(4, num_classes=2, size=32, seed=7, num_test_samples=3)
    assert sorted(data) == ["test", "train"]
    assert len(data["train"]) == 4 and len(data["test"]) == 3
    assert class_names_of(data) == SOS_CLASSES
    assert data["train"]["id"] == [f"sim7_{i:06d}" for i in range(4)]
    assert set(data["train"]["source"]) | set(data["test"]["source"]) == {"simulated"}
    assert len(set(data["test"]["id"]) | set(data["train"]["id"])) == 7
    for row in data["train"]:
        assert row["image"].mode == "L" and row["mask"].mode == "L"
        image, mask = np.asarray(row["image"]), np.asarray(row["mask"])
        assert image.shape == mask.shape == (32, 32)
        assert image.dtype == mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 1}
        assert row["classes"] == sorted(np.unique(mask).tolist())
    only_train = simulate_sar(2, size=32)
    assert list(only_train) == ["train"]


def test_five_classes_schema():
    data = simulate_sar(8, num_classes=5, size=48, seed=1)
    assert class_names_of(data) == OSD_CLASSES
    present = {k for row in data["train"]["classes"] for k in row}
    assert present == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("bad", [{"num_classes": 3}, {"num_classes": 1}, {"size": 4}, {"looks": 0.5}])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        simulate_sar(2, **bad)


def test_bad_counts():
    with pytest.raises(ValueError):
        simulate_sar(0)
    with pytest.raises(ValueError):
        simulate_sar(2, num_test_samples=-1)


def test_every_two_class_scene_has_oil_and_background():
    for i in range(32):
        _, mask = simulate_scene(0, i, num_classes=2, size=64)
        assert set(np.unique(mask).tolist()) == {0, 1}, i


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_all_five_classes_in_a_batch_of_eight(seed):
    present = set()
    for i in range(8):
        _, mask = simulate_scene(seed, i, num_classes=5, size=64)
        assert mask.max() <= 4
        assert 1 in mask  # oil in every scene
        assert (mask == 0).any()  # land never covers the whole scene
        present |= set(np.unique(mask).tolist())
    assert present == {0, 1, 2, 3, 4}


def test_deterministic_per_seed_and_index():
    a = simulate_scene(3, 5, num_classes=5, size=64)
    b = simulate_scene(3, 5, num_classes=5, size=64)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert simulate_scene(4, 5, num_classes=5, size=64)[0].tobytes() != a[0].tobytes()
    assert simulate_scene(3, 6, num_classes=5, size=64)[0].tobytes() != a[0].tobytes()
    assert simulate_scene(3, 5, num_classes=5, size=64, test=True)[0].tobytes() != a[0].tobytes()
    batch = {simulate_scene(3, i, num_classes=2, size=32)[0].tobytes() for i in range(8)}
    assert len(batch) == 8  # every scene of a batch differs


def test_sample_i_does_not_depend_on_num_samples(tmp_path, monkeypatch):
    four = simulate_sar(4, size=32, seed=11)["train"]
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "other_cache"))
    eight = simulate_sar(8, size=32, seed=11)["train"]
    again = simulate_sar(4, size=32, seed=11)["train"]  # rebuilt in a fresh cache
    for x, y, z in zip(_images(four), _images(eight)[:4], _images(again)):
        assert x.tobytes() == y.tobytes() == z.tobytes()
    assert [np.asarray(r["mask"]).tobytes() for r in four] == [np.asarray(r["mask"]).tobytes() for r in eight][:4]
    other_seed = simulate_sar(4, size=32, seed=12)["train"]
    assert all(x.tobytes() != y.tobytes() for x, y in zip(_images(four), _images(other_seed)))
    test = simulate_sar(4, size=32, seed=11, num_test_samples=4)["test"]
    assert all(x.tobytes() != y.tobytes() for x, y in zip(_images(four), _images(test)))


@pytest.mark.parametrize("num_classes", [2, 5])
def test_oil_is_darker_than_sea(num_classes):
    for i in range(8):
        image, mask = simulate_scene(2, i, num_classes=num_classes, size=64)
        sea, oil = image[mask == 0].astype(float), image[mask == 1].astype(float)
        # damping 0.2-0.35 in intensity: amplitude ratio about 0.45-0.6
        assert oil.mean() < 0.7 * sea.mean(), i


def test_ships_bright_land_brighter_than_sea():
    ship, land, sea = [], [], []
    for i in range(8):
        image, mask = simulate_scene(0, i, num_classes=5, size=64)
        ship.append(image[mask == 3])
        land.append(image[mask == 4])
        sea.append(image[mask == 0])
    ship, land, sea = (np.concatenate(v).astype(float).mean() for v in (ship, land, sea))
    assert ship > 2.5 * sea and land > 1.3 * sea


def _local_intensity_cv(looks, seed=0, block=8):
    """Mean coefficient of variation of intensity over 8x8 all-background blocks."""
    cvs = []
    for i in range(6):
        image, mask = simulate_scene(seed, i, num_classes=2, size=64, looks=looks)
        intensity = image.astype(float) ** 2
        for y in range(0, 64, block):
            for x in range(0, 64, block):
                if mask[y : y + block, x : x + block].any():
                    continue
                values = intensity[y : y + block, x : x + block]
                cvs.append(values.std() / values.mean())
    return float(np.mean(cvs))


def test_speckle_statistics_follow_the_number_of_looks():
    # Gamma(L, 1/L) intensity speckle: coefficient of variation 1/sqrt(L)
    cv1, cv4, cv16 = (_local_intensity_cv(L) for L in (1, 4, 16))
    assert 0.75 < cv1 < 1.15
    assert 0.38 < cv4 < 0.6
    assert 0.17 < cv16 < 0.33
    assert cv1 > cv4 > cv16


def test_fast():
    start = time.perf_counter()
    for i in range(64):
        simulate_scene(0, i, num_classes=5, size=64)
    assert time.perf_counter() - start < 1.5
    start = time.perf_counter()
    data = simulate_sar(64, num_classes=5, size=64, seed=5)
    assert len(data["train"]) == 64
    assert time.perf_counter() - start < 5.0  # about 0.2 s on an idle core
