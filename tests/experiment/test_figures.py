"""Report figures and the loss-log readers: tiny in-memory datasets, pixel checks that can fail."""

import json
import os

import datasets
import numpy as np
import pytest
from PIL import Image

from dakter_hf.data.features import segmentation_features
from dakter_hf.experiment import figures
from dakter_hf.generation.card import generated_features


CLASSES = ["background", "oil"]


def real_dataset(values=(40, 80, 120), size=32):
    rows = {"image": [], "mask": [], "id": [], "source": [], "classes": []}
    for i, value in enumerate(values):
        mask = np.zeros((size, size), np.uint8)
        mask[: size // 2] = 1
        rows["image"].append(Image.fromarray(np.full((size, size), value, np.uint8), mode="L"))
        rows["mask"].append(Image.fromarray(mask, mode="L"))
        rows["id"].append(f"r{i}")
        rows["source"].append("test")
        rows["classes"].append([0, 1])
    return datasets.Dataset.from_dict(rows, features=segmentation_features(CLASSES))


def generated_dataset(oil_logit=(20.0, -20.0), value=200, size=16):
    """One row per oil logit: the soft label favours oil (+) or background (-) everywhere."""
    rows = {"image": [], "soft_label": [], "mask": [], "seed": [], "index": [], "classes": []}
    for i, logit in enumerate(oil_logit):
        soft = np.zeros((2, size, size), np.float16)
        soft[1] = logit
        mask = (soft.argmax(0)).astype(np.uint8)
        rows["image"].append(Image.fromarray(np.full((size, size), value, np.uint8), mode="L"))
        rows["soft_label"].append(soft)
        rows["mask"].append(Image.fromarray(mask, mode="L"))
        rows["seed"].append(i)
        rows["index"].append(i)
        rows["classes"].append(np.unique(mask).tolist())
    return datasets.Dataset.from_dict(rows, features=generated_features(CLASSES, size, size))


def test_real_vs_generated_blocks_show_their_own_pixels():
    image = np.asarray(
        figures.real_vs_generated_figure(real_dataset(), {"DAKTer": generated_dataset()}, num_samples=2, size=24)
    )
    block = image.shape[0] // 2
    assert image.shape == (2 * block, 2 * (2 * 24 + 4 * figures.PAD) + figures.PAD, 3)
    real_pixels, generated_pixels = (
        image[figures.LABEL_HEIGHT : block - figures.PAD],
        image[block + figures.LABEL_HEIGHT : -figures.PAD],
    )
    assert {40, 80, 120} & set(np.unique(real_pixels)) and 200 not in np.unique(real_pixels)
    assert 200 in np.unique(generated_pixels) and not {40, 80, 120} & set(np.unique(generated_pixels))
    assert (real_pixels == figures.PALETTE[1]).all(axis=-1).any()  # oil half of the real masks, cyan
    again = figures.real_vs_generated_figure(real_dataset(), {"DAKTer": generated_dataset()}, num_samples=2, size=24)
    assert np.array_equal(np.asarray(again), image)  # seeded pick


def test_real_block_can_be_left_out():
    image = np.asarray(figures.real_vs_generated_figure(None, {"DAKTer": generated_dataset()}, num_samples=2, size=24))
    assert image.shape[0] == figures.LABEL_HEIGHT + 24 + figures.PAD  # the generated block only
    assert not {40, 80, 120} & set(np.unique(image[figures.LABEL_HEIGHT : -figures.PAD]))  # no real pixel


def test_soft_label_panel_is_bright_where_oil_is_certain():
    size = 20
    image = np.asarray(figures.soft_label_figure(generated_dataset((20.0, -20.0)), num_samples=2, size=size)).astype(
        int
    )
    left = 2 * figures.PAD + size
    panels = [
        image[top : top + size, left : left + size]
        for top in (figures.LABEL_HEIGHT + figures.PAD, figures.LABEL_HEIGHT + 2 * figures.PAD + size)
    ]
    assert panels[0].mean() > 200 and panels[1].mean() < 20
    mask_left = left + size + figures.PAD
    assert (image[figures.LABEL_HEIGHT + figures.PAD + 5, mask_left + 5] == figures.PALETTE[1]).all()


def test_soft_label_figure_needs_soft_labels():
    with pytest.raises(ValueError, match="soft_label"):
        figures.soft_label_figure(real_dataset())


def test_plots_have_a_sensible_size_and_draw_the_baseline():
    points = {"DAKTer": [(1.0, 0.6, 0.02), (0.5, 0.55, 0.03)], "DDPM-L2": [(0.5, 0.5, 0.01), (1.0, 0.52, 0.02)]}
    plain = figures.scale_curve_figure(points)
    with_baseline = figures.scale_curve_figure(points, baseline=(0.5, 0.02))
    assert plain.size == (500, 350) and np.abs(np.asarray(plain, int) - np.asarray(with_baseline, int)).sum() > 0
    curves = figures.training_curves_figure(
        {"loss": [(1, 10.0), (2, 1.0), (3, 0.01)], "empty": []}, "joint", smoothing=0.5
    )
    assert curves.size == (600, 350)


def test_log_scale_only_beyond_two_decades():
    assert figures._use_log_scale([10.0, 0.01]) and not figures._use_log_scale([1.0, 0.5])
    assert not figures._use_log_scale([10.0, 0.0, 0.001]) and not figures._use_log_scale([])


def test_save_png_replaces_whole_and_leaves_no_temp(tmp_path):
    path = str(tmp_path / "figure.png")
    with open(path, "wb") as handle:
        handle.write(b"x" * 100000)
    figures.save_png(Image.new("RGB", (8, 4), "red"), path)
    assert os.listdir(tmp_path) == ["figure.png"] and Image.open(path).size == (8, 4)
    assert os.path.getsize(path) < 1000


def test_joint_loss_curve_skips_half_written_line(tmp_path):
    assert figures.joint_loss_curve(str(tmp_path)) == {}
    records = [
        {"step": 1, "loss": 2.0, "image_loss": 1.5, "label_loss": 0.5, "lr": 1e-4, "images_per_second": 3.0},
        {"step": 2, "loss": 1.0, "image_loss": 0.8, "label_loss": 0.2, "lr": 1e-4},
    ]
    (tmp_path / "loss_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 3, "lo')
    curves = figures.joint_loss_curve(str(tmp_path))
    assert curves == {
        "loss": [(1, 2.0), (2, 1.0)],
        "image_loss": [(1, 1.5), (2, 0.8)],
        "label_loss": [(1, 0.5), (2, 0.2)],
    }
    (tmp_path / "loss_history.jsonl").write_text("not json\n")
    with pytest.raises(ValueError, match="loss_history.jsonl"):
        figures.joint_loss_curve(str(tmp_path))


def test_student_loss_curve_falls_back_to_newest_checkpoint(tmp_path):
    assert figures.student_loss_curve(str(tmp_path)) == []
    for step in (9, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        history = [{"step": s, "loss": 1.0 / s, "learning_rate": 1e-3} for s in range(1, step + 1)] + [
            {"step": step, "eval_loss": 0.3}
        ]
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    curve = figures.student_loss_curve(str(tmp_path))
    assert len(curve) == 10 and curve[-1] == (10, 0.1)  # checkpoint-10, not checkpoint-9 (string order)
    (tmp_path / "trainer_state.json").write_text('{"log_history": [')
    with pytest.raises(ValueError, match="trainer_state.json"):
        figures.student_loss_curve(str(tmp_path))


def test_reliability_bins_pool_over_seeds_and_the_diagram_draws_each_arm():
    a = {"bins": 3, "count": [2, 0, 6], "confidence": [0.2, None, 0.9], "accuracy": [0.5, None, 0.5]}
    b = {"bins": 3, "count": [2, 4, 2], "confidence": [0.3, 0.5, 0.7], "accuracy": [0.0, 0.25, 1.0]}
    pooled = figures.pooled_reliability([a, b, None])
    np.testing.assert_allclose(pooled["count"], [4, 4, 8])
    np.testing.assert_allclose(pooled["confidence"], [0.25, 0.5, (6 * 0.9 + 2 * 0.7) / 8])
    np.testing.assert_allclose(pooled["accuracy"], [0.25, 0.25, (6 * 0.5 + 2 * 1.0) / 8])
    assert figures.pooled_reliability([None, {"count": [0, 0]}]) is None
    one = figures.reliability_figure({"real only": pooled})
    two = figures.reliability_figure({"real only": pooled, "KD": figures.pooled_reliability([b])})
    assert one.size == (500, 500) and np.abs(np.asarray(one, int) - np.asarray(two, int)).sum() > 0
