"""Tests of dakter_hf.evaluation (statistics, report, formatting) on images whose statistics are known in advance."""

import json
import math

import datasets
import numpy as np
import pytest
from helpers import assert_imports_none_of, assert_old_path_forwards
from PIL import Image

from dakter_hf.data.features import segmentation_features
from dakter_hf.evaluation.formatting import format_quality_table
from dakter_hf.evaluation.report import quality_report
from dakter_hf.evaluation.statistics import (
    alignment_stats,
    histogram_distance,
    intensity_histogram,
    oil_fraction,
    radial_frequencies,
    radial_power_spectrum,
    speckle_stats,
    spectrum_distance,
)


def gamma_speckle(looks, shape, scale=60.0, seed=0):
    """Amplitude images whose intensity (amplitude^2) is Gamma(L, 1/L) * scale^2."""
    rng = np.random.default_rng(seed)
    intensity = rng.gamma(looks, 1.0 / looks, size=shape)
    return np.sqrt(intensity) * scale


def box_blur(image, k=5):
    out = np.zeros_like(image, dtype=np.float64)
    for dy in range(-(k // 2), k // 2 + 1):
        for dx in range(-(k // 2), k // 2 + 1):
            out += np.roll(np.roll(image, dy, axis=0), dx, axis=1)
    return out / (k * k)


# ---------------------------------------------------------------- speckle


@pytest.mark.parametrize("looks", [1, 4, 10])
def test_speckle_enl_and_cv_of_gamma_speckle(looks):
    images = gamma_speckle(looks, (3, 96, 96), seed=looks)
    masks = np.zeros(images.shape, dtype=np.int64)
    stats = speckle_stats(images, masks, sea_class=0, window=8)
    assert stats["num_windows"] == 3 * 12 * 12
    assert stats["enl_median"] == pytest.approx(looks, rel=0.08)
    assert stats["cv_median"] == pytest.approx(1 / math.sqrt(looks), rel=0.05)


def test_speckle_quantised_uint8_images():
    image = np.clip(np.rint(gamma_speckle(4, (128, 128), scale=50.0)), 0, 255).astype(np.uint8)
    stats = speckle_stats([Image.fromarray(image)], [Image.fromarray(np.zeros_like(image))], window=16)
    assert stats["enl_median"] == pytest.approx(4, rel=0.1)


def test_speckle_uses_only_windows_entirely_in_sea():
    # left half: 1-look speckle labelled sea; right half: 10 looks labelled oil
    image = np.concatenate([gamma_speckle(1, (64, 32), seed=1), gamma_speckle(10, (64, 32), seed=2)], axis=1)
    mask = np.zeros((64, 64), dtype=np.int64)
    mask[:, 32:] = 1
    mask[0, 0] = 1  # spoils exactly one 8x8 sea tile
    stats = speckle_stats([image], [mask], sea_class=0, window=8)
    assert stats["num_windows"] == 8 * 4 - 1
    assert stats["enl_median"] == pytest.approx(1.0, rel=0.25)
    oil = speckle_stats([image], [mask], sea_class=1, window=8)
    assert oil["num_windows"] == 8 * 4
    assert oil["enl_median"] > 7


def test_speckle_constant_and_empty():
    image = np.full((16, 16), 100.0)
    stats = speckle_stats([image], [np.zeros((16, 16), int)], window=8)
    assert stats["num_windows"] == 0 and stats["num_constant_windows"] == 4
    assert stats["enl_median"] is None and stats["cv_median"] is None
    none = speckle_stats([image], [np.ones((16, 16), int)], sea_class=0, window=8)
    assert none["num_windows"] == 0 and none["num_constant_windows"] == 0


# ---------------------------------------------------------------- histograms


def test_histogram_is_normalised_and_identical_gives_zero():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 32, 32)).astype(np.uint8)
    h = intensity_histogram(images, bins=64)
    assert h.shape == (64,) and h.sum() == pytest.approx(1.0)
    d = histogram_distance(h, h.copy())
    assert d["js"] == pytest.approx(0.0, abs=1e-12)
    assert d["w1"] == pytest.approx(0.0, abs=1e-12)


def test_histogram_shift_by_a_tenth_gives_w1_of_a_tenth():
    rng = np.random.default_rng(1)
    base = rng.uniform(40, 120, size=(64, 64))
    shifted = base + 0.1 * 255
    d = histogram_distance(intensity_histogram([base], bins=256), intensity_histogram([shifted], bins=256))
    assert d["w1"] == pytest.approx(0.1, abs=2 / 255)
    d64 = histogram_distance(intensity_histogram([base], bins=64), intensity_histogram([shifted], bins=64))
    assert d64["w1"] == pytest.approx(0.1, abs=4 / 255)
    assert 0 < d64["js"] < 1


def test_histogram_disjoint_gives_js_one():
    dark = np.full((8, 8), 10, dtype=np.uint8)
    bright = np.full((8, 8), 200, dtype=np.uint8)
    d = histogram_distance(intensity_histogram([dark]), intensity_histogram([bright]))
    assert d["js"] == pytest.approx(1.0)
    # all mass moves from bin of 10 to bin of 200 (bins of 4 levels: centres 10 and 202)
    assert d["w1"] == pytest.approx(192 / 255)


def test_histogram_exact_w1_for_uint8():
    a = np.full((4, 4), 100, dtype=np.uint8)
    b = np.full((4, 4), 151, dtype=np.uint8)
    d = histogram_distance(intensity_histogram([a], bins=256), intensity_histogram([b], bins=256))
    assert d["w1"] == pytest.approx(51 / 255)


# ---------------------------------------------------------------- spectra


def test_white_noise_spectrum_is_flat():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(16, 64, 64)).astype(np.float64)
    spectrum = radial_power_spectrum(images)
    assert spectrum.shape == (32,)
    assert np.all(np.isfinite(spectrum))
    # uniform 0..255 scaled to [-1, 1] has variance ~1/3: the flat level
    assert np.median(spectrum) == pytest.approx(1 / 3, rel=0.05)
    logs = np.log10(spectrum)
    assert np.max(np.abs(logs - np.median(logs))) < 0.15


def test_scaling_image_scales_spectrum_by_a_squared():
    rng = np.random.default_rng(3)
    image = box_blur(rng.normal(128, 40, size=(64, 64)), 3)
    a = 0.5
    s1 = radial_power_spectrum([image])
    s2 = radial_power_spectrum([image * a])
    np.testing.assert_allclose(s2, s1 * a * a, rtol=1e-9)
    assert spectrum_distance(s1, s2) == pytest.approx(2 * abs(math.log10(a)), rel=1e-9)
    assert spectrum_distance(s1, s1) == 0.0


def test_smoothing_removes_high_frequency_power():
    rng = np.random.default_rng(4)
    noise = rng.normal(128, 40, size=(4, 64, 64))
    smooth = np.stack([box_blur(x, 5) for x in noise])
    s_noise = radial_power_spectrum(noise)
    s_smooth = radial_power_spectrum(smooth)
    high = radial_frequencies(len(s_noise)) > 0.25
    assert np.mean(s_smooth[high]) < 0.05 * np.mean(s_noise[high])
    assert spectrum_distance(s_noise, s_smooth) > 0.5


def test_spectrum_bins_and_size_independence():
    rng = np.random.default_rng(5)
    small = radial_power_spectrum(rng.normal(128, 30, size=(8, 32, 32)), num_bins=8)
    large = radial_power_spectrum(rng.normal(128, 30, size=(2, 64, 64)), num_bins=8)
    np.testing.assert_allclose(radial_frequencies(8), np.arange(1, 9) / 16)
    assert spectrum_distance(small, large) < 0.05
    with pytest.raises(ValueError):
        spectrum_distance(small, large[:4])


# ---------------------------------------------------------------- alignment and labels


def test_alignment_known_values():
    mask = np.zeros((4, 4), dtype=np.int64)
    mask[:2] = 1  # top half oil
    image = np.full((4, 4), 200, dtype=np.uint8)
    image[:2] = 50  # oil dark
    no_oil_img = np.full((4, 4), 100, dtype=np.uint8)
    no_oil_mask = np.zeros((4, 4), dtype=np.int64)
    stats = alignment_stats([image, no_oil_img], [mask, no_oil_mask], oil_class=1)
    assert stats["num_images"] == 2
    assert stats["num_images_with_oil"] == 1
    assert stats["mean_inside"] == pytest.approx(50 / 255)
    assert stats["mean_outside"] == pytest.approx((200 / 255 + 100 / 255) / 2)
    out, ins = 150 / 255, 50 / 255
    assert stats["contrast"] == pytest.approx((out - ins) / (out + ins))
    assert stats["contrast_paired"] == pytest.approx((200 - 50) / (200 + 50))
    # bright oil: negative contrast
    flipped = alignment_stats([255 - image], [mask])
    assert flipped["contrast"] < 0


def test_alignment_without_oil():
    stats = alignment_stats([np.full((4, 4), 80)], [np.zeros((4, 4), int)])
    assert stats["num_images_with_oil"] == 0
    assert stats["mean_inside"] is None and stats["contrast"] is None and stats["contrast_paired"] is None
    assert stats["mean_outside"] == pytest.approx(80 / 255)


def test_oil_fraction():
    m1 = np.zeros((4, 4), int)
    m1[0, :2] = 1  # 2/16
    m2 = np.zeros((4, 4), int)
    m3 = np.ones((4, 4), int)
    m3[0, 0] = 2  # 15/16
    stats = oil_fraction([m1, m2, m3], oil_class=1)
    assert stats["num_images"] == 3
    assert stats["oil_pixel_fraction"] == pytest.approx((2 / 16 + 0 + 15 / 16) / 3)
    assert stats["images_with_oil_fraction"] == pytest.approx(2 / 3)
    assert oil_fraction([], 1)["oil_pixel_fraction"] is None


# ---------------------------------------------------------------- report


def make_pairs(n, size, seed, looks=4, oil_value=None):
    pairs = []
    for i in range(n):
        amp = gamma_speckle(looks, (size, size), scale=80.0, seed=seed * 100 + i)
        mask = np.zeros((size, size), dtype=np.uint8)
        if i % 2 == 0:
            r = size // 4
            mask[r : 2 * r, r : 3 * r] = 1
            amp[mask == 1] *= 0.3  # dark oil
        image = np.clip(np.rint(amp), 0, 255).astype(np.uint8)
        pairs.append((image, mask))
    return pairs


def as_dataset(pairs, class_names):
    records = {
        "image": [Image.fromarray(p[0]) for p in pairs],
        "mask": [Image.fromarray(p[1]) for p in pairs],
        "id": [str(i) for i in range(len(pairs))],
        "source": ["test"] * len(pairs),
        "classes": [sorted(int(v) for v in np.unique(p[1])) for p in pairs],
    }
    return datasets.Dataset.from_dict(records, features=segmentation_features(class_names))


def test_quality_report_identical_datasets():
    ds = as_dataset(make_pairs(4, 32, seed=1), ["sea_surface", "oil_spill", "look_alike", "ship", "land"])
    report = quality_report(ds, ds)
    json.dumps(report, allow_nan=False)
    assert report["num_real"] == report["num_generated"] == 4
    assert report["oil_class"] == 1
    assert report["distance"]["histogram_js"] == pytest.approx(0.0, abs=1e-12)
    assert report["distance"]["histogram_w1"] == pytest.approx(0.0, abs=1e-12)
    assert report["distance"]["spectrum_log10_mad"] == pytest.approx(0.0, abs=1e-12)
    for side in ("real", "generated"):
        r = report[side]
        assert r["images_with_oil"] == 2
        assert r["oil_contrast"] > 0.3
        assert r["images_with_oil_fraction"] == pytest.approx(0.5)
        assert r["enl_median"] == pytest.approx(4, rel=0.3)
        assert len(r["histogram"]) == 64 and len(r["spectrum"]) == 16
    assert not any("resized" in n for n in report["notes"])
    table = format_quality_table(report)
    assert "speckle ENL" in table and "histogram Jensen-Shannon" in table
    lines = table.splitlines()
    assert len({len(l) for l in lines[: 2 + 14]}) == 1  # fixed width
    assert all(l.count("|") == 4 for l in lines[: 2 + 14])  # markdown: 3 columns, no stray pipes
    assert all(l.count("|") == 3 for l in lines[17:20])


def test_quality_report_resizes_real_and_detects_differences():
    real = as_dataset(make_pairs(3, 64, seed=2), ["background", "oil"])
    # generated: smooth (speckle-free) and brighter, at 32x32, given as a list of pairs
    gen = []
    for image, mask in make_pairs(3, 32, seed=3):
        smooth = np.clip(box_blur(image.astype(float), 5) + 40, 0, 255).astype(np.uint8)
        gen.append((smooth, mask))
    report = quality_report(real, gen, max_images=2)
    json.dumps(report, allow_nan=False)
    assert report["num_real"] == 2 and report["num_generated"] == 2
    assert report["oil_class"] == 1  # "oil" from the real dataset's class names
    assert report["real"]["image_size"] == [32, 32]
    assert any("resized" in n for n in report["notes"])
    d = report["distance"]
    assert d["histogram_w1"] > 0.1
    assert d["histogram_js"] > 0.1
    assert d["spectrum_log10_mad"] > 0.3
    assert report["generated"]["high_freq_power_fraction"] < report["real"]["high_freq_power_fraction"]
    assert report["generated"]["enl_median"] > 2 * report["real"]["enl_median"]
    assert "| statistic" in format_quality_table(report)


def test_quality_report_without_class_names_defaults_to_oil_class_one():
    pairs = make_pairs(2, 16, seed=4)
    report = quality_report(pairs, [{"image": i, "mask": m} for i, m in pairs])
    assert report["oil_class"] == 1
    assert report["class_names"] is None
    assert any("class names unknown" in n for n in report["notes"])


# ------------------------------------------------------------------------- layout
OLD_PUBLIC_NAMES = [
    "GREY_LEVELS",
    "HIGH_FREQUENCY",
    "speckle_stats",
    "intensity_histogram",
    "histogram_distance",
    "radial_frequencies",
    "radial_power_spectrum",
    "spectrum_distance",
    "alignment_stats",
    "oil_fraction",
    "quality_report",
    "format_quality_table",
    "format_quality_comparison",
]


def test_old_module_path_forwards_every_public_name():
    """`from dakter_hf.quality import X` (before the split) still works for every public X, with a warning."""
    from dakter_hf.evaluation import formatting, report, statistics

    assert_old_path_forwards(
        "dakter_hf.quality", "dakter_hf.evaluation", OLD_PUBLIC_NAMES, (statistics, report, formatting)
    )


def test_evaluation_imports_no_sibling_layer():
    """evaluation sits beside students, generation and joint: it imports none of them (nor anything above)."""
    import dakter_hf.evaluation as package

    assert_imports_none_of(package, ("students", "generation", "joint", "experiment", "space", "cli"))
