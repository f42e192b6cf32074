"""Soft-label statistics and per-image class fractions (dakter_hf.evaluation.soft_labels), against hand computations.

Every expected number below is worked out by hand from probabilities written as fractions (binary entropy,
sigmoid of log-odds), not with the functions under test.
"""

import json
import math
import os

import datasets
import numpy as np
import pytest
from PIL import Image

from dakter_hf.cli import main
from dakter_hf.data.features import segmentation_features
from dakter_hf.evaluation.formatting import format_quality_table, format_soft_label_tables
from dakter_hf.evaluation.report import quality_report
from dakter_hf.evaluation.soft_labels import (
    DEFAULT_KD_TEMPERATURE,
    ClassFractions,
    boundary_band,
    class_fraction_comparison,
    entropy_bits,
    soft_label_statistics,
    top_probability,
)
from dakter_hf.experiment.report import soft_label_section
from dakter_hf.experiment.tables import parse_markdown_table
from dakter_hf.generation.card import generated_features
from dakter_hf.utils.ownership import claim_folder


def binary_entropy(p):
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def sigmoid_of_odds(odds, temperature=1.0):
    """P(class 1) for a logit difference of ln(odds), at temperature T: r^(1/T) / (1 + r^(1/T))."""
    r = odds ** (1.0 / temperature)
    return r / (1.0 + r)


# The 4x4 map: class 0 holds columns 0-1, class 1 columns 2-3. Log-odds (class 1 - class 0) of
#   row 0-1: -ln 99, -ln 3,  ln 3,  ln 99   (top probability 0.99, 0.75, 0.75, 0.99)
#   row 2-3: -ln 99, -ln 19, ln 19, ln 99   (top probability 0.99, 0.95, 0.95, 0.99)
ODDS = np.array([[99, 3, 3, 99], [99, 3, 3, 99], [99, 19, 19, 99], [99, 19, 19, 99]], dtype=np.float64)
SIGN = np.array([-1, -1, 1, 1], dtype=np.float64)[None, :]
ARGMAX = np.array([[0, 0, 1, 1]] * 4)


def hand_logits():
    """(2, 4, 4) logits: class 0 at 0, class 1 at the signed log-odds."""
    return np.stack([np.zeros((4, 4)), SIGN * np.log(ODDS)])


def test_per_pixel_entropy_and_top_probability_by_hand():
    logits = hand_logits()
    entropy = entropy_bits(logits)[0]
    top = top_probability(logits)[0]
    for (y, x), odds in np.ndenumerate(ODDS):
        p = odds / (odds + 1)  # 0.99, 0.75 or 0.95
        assert top[y, x] == pytest.approx(p, abs=1e-12)
        assert entropy[y, x] == pytest.approx(binary_entropy(p), abs=1e-12)
    top2 = top_probability(logits, temperature=2.0)[0]
    assert top2[0, 0] == pytest.approx(math.sqrt(99) / (1 + math.sqrt(99)))  # 0.9087
    assert top2[0, 1] == pytest.approx(math.sqrt(3) / (1 + math.sqrt(3)))  # 0.634
    # three classes with equal logits: uniform, log2 3 bits, top 1/3
    uniform = np.zeros((3, 2, 2))
    assert entropy_bits(uniform) == pytest.approx(np.full((1, 2, 2), math.log2(3)))
    assert top_probability(uniform) == pytest.approx(np.full((1, 2, 2), 1 / 3))


def test_soft_label_statistics_of_the_hand_map():
    h99, h75, h95 = binary_entropy(0.99), binary_entropy(0.75), binary_entropy(0.95)
    masks = ARGMAX.copy()
    masks[3, 3] = 0  # one stored-mask pixel disagrees with the argmax
    stats = soft_label_statistics(hand_logits(), masks=masks, boundary_width=1)
    json.dumps(stats, allow_nan=False)
    assert stats["num_images"] == 1 and stats["num_pixels"] == 16 and stats["num_classes"] == 2
    assert stats["entropy_bits_max"] == pytest.approx(1.0)
    # 8 interior pixels at 0.99, 4 band pixels at 0.75, 4 at 0.95
    assert stats["entropy_bits_mean"] == pytest.approx((8 * h99 + 4 * h75 + 4 * h95) / 16)
    # T = 2: odds r -> sqrt(r)
    t2 = [binary_entropy(sigmoid_of_odds(r, 2.0)) for r in (99, 3, 19)]
    assert stats["kd_temperature"] == 2.0
    assert stats["entropy_bits_mean_kd"] == pytest.approx((8 * t2[0] + 4 * t2[1] + 4 * t2[2]) / 16)
    # top < 0.9: at T = 1 only the 0.75 pixels; at T = 2 the 0.75 (-> 0.634) and 0.95 (-> 0.813) ones,
    # not the 0.99 ones (-> 0.9087)
    assert stats["top_below_threshold"] == pytest.approx(4 / 16)
    assert stats["top_below_threshold_kd"] == pytest.approx(8 / 16)
    # band of width 1 around the boundary between columns 1 and 2: columns 1 and 2
    assert stats["band_pixel_fraction"] == pytest.approx(8 / 16)
    assert stats["band_entropy_bits_mean"] == pytest.approx((4 * h75 + 4 * h95) / 8)
    assert stats["interior_entropy_bits_mean"] == pytest.approx(h99)
    assert stats["band_entropy_share"] == pytest.approx((4 * h75 + 4 * h95) / (4 * h75 + 4 * h95 + 8 * h99))
    assert stats["argmax_matches_mask"] == pytest.approx(15 / 16)
    # 10 bins of 0.1 bit: h99 = 0.081 -> bin 0, h95 = 0.286 -> bin 2, h75 = 0.811 -> bin 8
    assert stats["entropy_histogram"]["edges"] == pytest.approx([i / 10 for i in range(11)])
    expected = [0.0] * 10
    expected[0], expected[2], expected[8] = 8 / 16, 4 / 16, 4 / 16
    assert stats["entropy_histogram"]["fractions"] == pytest.approx(expected)


def test_default_band_of_two_pixels_covers_the_whole_4x4_map():
    stats = soft_label_statistics(hand_logits())  # columns 0 and 3 are 2 pixels from the other class
    assert stats["boundary_width"] == 2
    assert stats["band_pixel_fraction"] == pytest.approx(1.0)
    assert stats["interior_entropy_bits_mean"] is None
    assert stats["argmax_matches_mask"] is None


def test_statistics_pool_pixels_over_batches_and_float16():
    logits = hand_logits()
    flat = np.stack([np.zeros((2, 4, 4)), np.stack([np.zeros((4, 4)), np.full((4, 4), 50.0)])])  # + one-hot image
    pooled = soft_label_statistics([logits[None].astype(np.float16), flat], boundary_width=1)
    h99, h75, h95 = binary_entropy(0.99), binary_entropy(0.75), binary_entropy(0.95)
    assert pooled["num_images"] == 3 and pooled["num_pixels"] == 48
    # the all-zero image is uniform (1 bit everywhere, top 0.5); the +50 image ~ 0 bits, no boundary
    total = 8 * h99 + 4 * h75 + 4 * h95 + 16 * 1.0
    assert pooled["entropy_bits_mean"] == pytest.approx(total / 48, abs=1e-3)
    assert pooled["top_below_threshold"] == pytest.approx((4 + 16) / 48)
    assert pooled["band_pixel_fraction"] == pytest.approx(8 / 48)
    # uniform pixels land in the last bin (its right edge is log2 C)
    assert pooled["entropy_histogram"]["fractions"][-1] == pytest.approx(16 / 48)


def test_boundary_band_by_hand():
    centre = np.zeros((5, 5), dtype=np.int64)
    centre[2, 2] = 1
    expected = np.zeros((5, 5), dtype=bool)
    expected[1:4, 1:4] = True  # the 3x3 window: diagonal neighbours count (Chebyshev)
    assert (boundary_band(centre, 1) == expected).all()
    assert boundary_band(centre, 2).all()
    corner = np.zeros((5, 5), dtype=np.int64)
    corner[0, 0] = 1
    expected = np.zeros((5, 5), dtype=bool)
    expected[:2, :2] = True  # the image border is no boundary
    assert (boundary_band(corner, 1) == expected).all()
    assert not boundary_band(np.zeros((4, 4), dtype=np.int64), 2).any()
    assert not boundary_band(centre, 0).any()
    stacked = boundary_band(np.stack([centre, corner]), 1)
    assert (stacked[1] == expected).all() and stacked[0].sum() == 9


def oil_masks(counts, size=4):
    """size x size masks whose first `count` pixels (row-major) are oil (1), the rest sea (0)."""
    masks = []
    for count in counts:
        mask = np.zeros(size * size, dtype=np.int64)
        mask[:count] = 1
        masks.append(mask.reshape(size, size))
    return masks


GEN_OIL = [0, 2, 4, 4, 8]  # per-image oil fractions 0, 1/8, 1/4, 1/4, 1/2
REAL_OIL = [4, 4, 8, 8, 16]  # 1/4, 1/4, 1/2, 1/2, 1


def test_class_fraction_quantiles_and_wasserstein_by_hand():
    real, gen = ClassFractions(2), ClassFractions(2)
    for mask in oil_masks(REAL_OIL):
        real.add(mask)
    for mask in oil_masks(GEN_OIL):
        gen.add(mask)
    result = class_fraction_comparison(real, gen, ["sea", "oil"], oil_class=1)
    json.dumps(result, allow_nan=False)
    assert result["quantiles"] == [0.1, 0.25, 0.5, 0.75, 0.9]
    assert result["num_real"] == result["num_generated"] == 5
    oil = result["per_class"]["oil"]
    # linear interpolation at position (n - 1) q = 4 q over 0, 1/8, 1/4, 1/4, 1/2:
    # q 0.1 -> 0.4 of the way 0..1/8; 0.25 -> 1/8; 0.5 -> 1/4; 0.75 -> 1/4; 0.9 -> 0.6 of the way 1/4..1/2
    assert oil["generated"]["quantiles"] == pytest.approx([0.05, 0.125, 0.25, 0.25, 0.4])
    assert oil["generated"]["mean"] == pytest.approx((0 + 0.125 + 0.25 + 0.25 + 0.5) / 5)
    assert oil["generated"]["images_with_class"] == pytest.approx(4 / 5)
    assert oil["real"]["quantiles"] == pytest.approx([0.25, 0.25, 0.5, 0.5, 0.8])
    assert oil["real"]["images_with_class"] == pytest.approx(1.0)
    # equal sizes: W1 = mean |sorted differences| = (1/4 + 1/8 + 1/4 + 1/4 + 1/2) / 5
    assert oil["w1"] == pytest.approx(1.375 / 5)
    assert result["oil_w1"] == pytest.approx(1.375 / 5)
    sea = result["per_class"]["sea"]
    assert sea["w1"] == pytest.approx(1.375 / 5)  # sea = 1 - oil: the same distance
    assert sea["generated"]["quantiles"] == pytest.approx([0.6, 0.75, 0.75, 0.875, 0.95])
    assert sea["real"]["images_with_class"] == pytest.approx(4 / 5)


def test_class_fractions_unequal_sizes_ignore_ids_and_unknown_names():
    real, gen = ClassFractions(2), ClassFractions()
    ignore = np.array([[0, 1], [255, 255]])  # 255 is no class: 1/4 sea, 1/4 oil
    real.add(ignore)
    real.add(np.ones((2, 2), dtype=np.int64))
    gen.add(np.zeros((2, 2), dtype=np.int64))
    gen.add(np.array([[0, 0], [0, 2]]))  # a third class appears
    assert real.matrix(2) == pytest.approx(np.array([[0.25, 0.25], [0.0, 1.0]]))
    result = class_fraction_comparison(real, gen)
    assert result["classes"] == ["class 0", "class 1", "class 2"] and result["oil_class"] is None
    # oil: real {1/4, 1}, generated {0, 0}: W1 = mean distance to 0 = 5/8
    assert result["per_class"]["class 1"]["w1"] == pytest.approx(0.625)
    # class 2: real {0, 0}, generated {0, 1/4}; unequal sizes too: real {0}, generated {0, 1/4} -> 1/8
    assert result["per_class"]["class 2"]["w1"] == pytest.approx(0.125)
    one = ClassFractions(3)
    one.add(np.zeros((2, 2), dtype=np.int64))
    assert class_fraction_comparison(one, gen, ["a", "b", "c"])["per_class"]["c"]["w1"] == pytest.approx(0.125)


def test_refuses_bad_input():
    with pytest.raises(ValueError, match="at least 2 classes"):
        entropy_bits(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        entropy_bits(np.full((2, 2, 2), np.inf))
    with pytest.raises(ValueError, match="temperature"):
        soft_label_statistics(hand_logits(), kd_temperature=0)
    with pytest.raises(ValueError, match="negative"):
        ClassFractions().add(np.array([[-1]]))


def test_default_temperature_is_the_kd_losses_and_the_generation_checks():
    from dakter_hf.generation.config import KL_TEMPERATURE
    from dakter_hf.students.losses import KD_TEMPERATURE

    assert DEFAULT_KD_TEMPERATURE == KD_TEMPERATURE == KL_TEMPERATURE == 2.0


# ---------------------------------------------------------------- quality report, formatting, CLI

CLASSES = ["sea_surface", "oil_spill"]


def generated_dataset(with_soft_labels=True):
    """5 generated 4x4 pairs: masks with GEN_OIL oil pixels; every soft label is the hand map (float16)."""
    rng = np.random.default_rng(0)
    masks = oil_masks(GEN_OIL)
    rows = {
        "image": [Image.fromarray(rng.integers(0, 256, (4, 4)).astype(np.uint8)) for _ in masks],
        "mask": [Image.fromarray(m.astype(np.uint8)) for m in masks],
        "seed": list(range(5)),
        "index": list(range(5)),
        "classes": [sorted(set(m.ravel().tolist())) for m in masks],
    }
    if with_soft_labels:
        rows["soft_label"] = [hand_logits().astype(np.float16)] * 5
    features = generated_features(CLASSES, 4, 4, with_soft_labels=with_soft_labels)
    return datasets.Dataset.from_dict(rows, features=features)


def real_dataset():
    rng = np.random.default_rng(1)
    masks = oil_masks(REAL_OIL)
    return datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(rng.integers(0, 256, (4, 4)).astype(np.uint8)) for _ in masks],
            "mask": [Image.fromarray(m.astype(np.uint8)) for m in masks],
            "id": [str(i) for i in range(5)],
            "source": ["test"] * 5,
            "classes": [sorted(set(m.ravel().tolist())) for m in masks],
        },
        features=segmentation_features(CLASSES),
    )


def test_quality_report_has_the_soft_label_section():
    report = quality_report(real_dataset(), generated_dataset(), boundary_width=1, soft_label_batch_size=2)
    json.dumps(report, allow_nan=False)
    soft = report["soft_labels"]
    h99, h75, h95 = binary_entropy(0.99), binary_entropy(0.75), binary_entropy(0.95)
    assert soft["num_images"] == 5 and soft["num_pixels"] == 80  # batches of 2, 2 and 1
    assert soft["entropy_bits_mean"] == pytest.approx((8 * h99 + 4 * h75 + 4 * h95) / 16, abs=1e-3)  # float16
    assert soft["top_below_threshold"] == pytest.approx(4 / 16)
    assert soft["top_below_threshold_kd"] == pytest.approx(8 / 16)
    assert soft["band_pixel_fraction"] == pytest.approx(8 / 16)
    # agreement of the argmax (columns 2-3 oil) with the stored masks, per image (first k pixels oil):
    # k = 0: 8; k = 2: 6; k = 4: 8; k = 4: 8; k = 8: 8 of 16
    assert soft["argmax_matches_mask"] == pytest.approx((8 + 6 + 8 + 8 + 8) / 80)
    fractions = report["class_fractions"]
    assert fractions["classes"] == CLASSES and fractions["oil_class"] == 1
    assert fractions["per_class"]["oil_spill"]["generated"]["quantiles"] == pytest.approx(
        [0.05, 0.125, 0.25, 0.25, 0.4]
    )
    assert fractions["oil_w1"] == pytest.approx(1.375 / 5)
    assert report["settings"]["kd_temperature"] == 2.0 and report["settings"]["boundary_width"] == 1

    limited = quality_report(real_dataset(), generated_dataset(), max_images=3)
    assert limited["soft_labels"]["num_images"] == 3 and limited["class_fractions"]["num_generated"] == 3


def test_quality_report_without_soft_labels_gives_only_class_fractions():
    report = quality_report(real_dataset(), generated_dataset(with_soft_labels=False))
    assert report["soft_labels"] is None
    assert any("no soft_label column" in note for note in report["notes"])
    assert report["class_fractions"]["oil_w1"] == pytest.approx(1.375 / 5)
    text = format_soft_label_tables({"generated": report})
    assert "soft labels (generated)" not in text and "W1 vs real" in text


def test_formatting_shows_the_numbers():
    report = quality_report(real_dataset(), generated_dataset(), boundary_width=1)
    text = format_quality_table(report)
    assert "What the soft labels carry" in text
    soft_table = parse_markdown_table(text[text.index("| soft labels (generated)") :])
    by_label = {row["soft labels (generated)"]: row["generated"] for row in soft_table}
    assert by_label["top probability < 0.9, T = 1"] == "25.00 %"
    assert by_label["top probability < 0.9, T = 2"] == "50.00 %"
    assert by_label["pixels within 1 px of a class boundary"] == "50.00 %"
    fractions = parse_markdown_table(text[text.index("| class ") :])
    oil = [row for row in fractions if row["class"] == "oil_spill"]
    assert [row["masks"] for row in oil] == ["real", "generated"]
    assert oil[1]["90 %"] == "0.4" and oil[1]["images with it"] == "80.00 %" and oil[1]["W1 vs real"] == "0.275"
    assert oil[0]["90 %"] == "0.8" and oil[0]["W1 vs real"] == "-"


def test_experiment_report_section_per_generated_set():
    with_soft = quality_report(real_dataset(), generated_dataset(), boundary_width=1)
    without = quality_report(real_dataset(), generated_dataset(with_soft_labels=False))
    old = {k: v for k, v in with_soft.items() if k not in ("soft_labels", "class_fractions")}  # a cached old step
    lines = soft_label_section({"dakter-kd": with_soft, "dakter-l2": without, "cached": old})
    text = "\n".join(lines)
    assert text.startswith("## What the soft labels carry")
    table = parse_markdown_table(text)
    header = list(table[0])
    assert header == ["soft labels (generated)", "dakter-kd", "dakter-l2", "cached"]
    assert table[3]["dakter-kd"] == "25.00 %" and table[3]["dakter-l2"] == "n/a"
    assert "No soft labels (L2 labels?): dakter-l2, cached." in text
    assert "Not measured for cached" in text
    oil_rows = [r for r in parse_markdown_table(text[text.index("| class ") :]) if r["class"] == "oil_spill"]
    assert [r["masks"] for r in oil_rows] == ["real", "dakter-kd", "dakter-l2"]


def test_cli_quality_prints_and_writes_the_soft_label_statistics(tmp_path, capsys):
    real_dir = str(tmp_path / "real")
    datasets.DatasetDict({"train": real_dataset()}).save_to_disk(real_dir)
    out = str(tmp_path / "generated")
    claim_folder(out, "generate", {})
    datasets.DatasetDict({"train": generated_dataset()}).save_to_disk(os.path.join(out, "hf"))
    assert main(["quality", "--real", real_dir, "--generated", out, "--boundary-width", "1"]) == 0
    printed = capsys.readouterr().out
    assert "What the soft labels carry" in printed
    assert "| top probability < 0.9, T = 2" in printed and "50.00 %" in printed
    with open(os.path.join(out, "quality.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    assert report["soft_labels"]["top_below_threshold_kd"] == pytest.approx(0.5)
    assert report["soft_labels"]["boundary_width"] == 1
    assert report["class_fractions"]["oil_w1"] == pytest.approx(0.275)
    assert main(["quality", "--real", real_dir, "--generated", out, "--kd-temperature", "1"]) == 0
    capsys.readouterr()
    with open(os.path.join(out, "quality.json"), encoding="utf-8") as handle:
        assert json.load(handle)["soft_labels"]["top_below_threshold_kd"] == pytest.approx(0.25)


def test_each_set_is_shown_beside_its_own_real_masks():
    """Sets measured against different real masks (an experiment's label fractions) each get their real row."""

    def comparison(real_oil, generated_oil):
        real, generated = ClassFractions(2), ClassFractions(2)
        for oil in real_oil:
            real.add(np.array([1] * oil + [0] * (10 - oil)))
        for oil in generated_oil:
            generated.add(np.array([1] * oil + [0] * (10 - oil)))
        return {"class_fractions": class_fraction_comparison(real, generated, ["background", "oil"], oil_class=1)}

    shared = format_soft_label_tables({"a": comparison([2, 4], [1, 1]), "b": comparison([2, 4], [3, 3])})
    rows = parse_markdown_table(shared)
    assert [r["masks"] for r in rows if r["class"] == "oil"] == ["real", "a", "b"]
    apart = format_soft_label_tables({"a": comparison([2, 4], [1, 1]), "b": comparison([6, 8], [3, 3])})
    oil = [r for r in parse_markdown_table(apart) if r["class"] == "oil"]
    assert [r["masks"] for r in oil] == ["real (a)", "a", "real (b)", "b"]
    assert oil[2]["mean"] == "0.7"  # b's real masks: 6 and 8 of 10 pixels
