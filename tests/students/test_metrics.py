"""Table 4 metrics (dakter_hf.students.metrics) against an independent per-class computation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dakter_hf.students.metrics import (
    CalibrationAccumulator,
    SegmentationMetricAccumulator,
    confusion_matrix,
    flatten_metrics,
    format_calibration_row,
    format_table4_row,
    load_metric_module,
    make_batch_compute_metrics,
    metrics_from_confusion,
)


PER_CATEGORY = ("iou", "accuracy", "f1", "precision", "recall")


def reference_metrics(pred: np.ndarray, ref: np.ndarray, num_labels: int, ignore_index: int = 255) -> dict:
    """Per-class metrics from boolean masks, written without a confusion matrix."""
    keep = ref != ignore_index
    pred, ref = pred[keep], ref[keep]
    per = {name: [] for name in PER_CATEGORY}
    for c in range(num_labels):
        tp = int(((pred == c) & (ref == c)).sum())
        fp = int(((pred == c) & (ref != c)).sum())
        fn = int(((pred != c) & (ref == c)).sum())
        if tp + fp + fn == 0:
            for name in PER_CATEGORY:
                per[name].append(math.nan)
            continue
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        per["iou"].append(tp / (tp + fp + fn))
        per["precision"].append(precision)
        per["recall"].append(recall)
        per["accuracy"].append(recall)
        per["f1"].append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    out = {f"per_category_{name}": np.array(values) for name, values in per.items()}
    for name in PER_CATEGORY:
        values = [v for v in per[name] if not math.isnan(v)]
        out[f"mean_{name}"] = sum(values) / len(values)
    out["overall_accuracy"] = float((pred == ref).sum()) / ref.size
    return out


def assert_same(result: dict, expected: dict) -> None:
    for key, value in expected.items():
        np.testing.assert_allclose(result[key], value, rtol=1e-12, atol=0, err_msg=key)


def random_maps(seed: int, num_labels: int, shape=(4, 16, 16)):
    """Random predictions/references with a class absent from both, one only in the
    reference, one only in the prediction, and some ignored pixels."""
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, num_labels, size=shape)
    pred = np.where(rng.random(shape) < 0.6, ref, rng.integers(0, num_labels, size=shape))
    if num_labels == 5:
        absent, only_ref, only_pred = 4, 3, 2
        ref[ref == absent] = 0
        pred[pred == absent] = 1
        pred[pred == only_ref] = 0
        ref[ref == only_pred] = 1
    ref[rng.random(shape) < 0.05] = 255
    return pred, ref


@pytest.mark.parametrize("num_labels", [2, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_per_class_computation(seed, num_labels):
    pred, ref = random_maps(seed, num_labels)
    expected = reference_metrics(pred, ref, num_labels)
    result = metrics_from_confusion(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(ref), num_labels))
    assert_same(result, expected)
    for name in PER_CATEGORY:
        assert result[f"per_category_{name}"].dtype == np.float64
        assert result[f"per_category_{name}"].shape == (num_labels,)
    if num_labels == 5:
        for name in PER_CATEGORY:  # class 4: absent from both -> NaN, not in means
            assert math.isnan(result[f"per_category_{name}"][4])
            assert not math.isnan(result[f"mean_{name}"])
        assert result["mean_iou"] == pytest.approx(np.mean(result["per_category_iou"][:4]))
        assert result["per_category_precision"][3] == 0.0  # only in the reference: never predicted
        assert result["per_category_recall"][3] == 0.0
        assert result["per_category_recall"][2] == 0.0  # only predicted: never in the reference
        assert result["per_category_precision"][2] == 0.0
        assert result["per_category_f1"][2] == 0.0


def test_numpy_and_torch_inputs_agree_and_shape():
    pred, ref = random_maps(3, 5)
    cm = confusion_matrix(pred, ref, 5)
    assert cm.dtype == np.int64 and cm.shape == (5, 5)
    np.testing.assert_array_equal(cm, confusion_matrix(torch.from_numpy(pred), ref.astype(np.uint16), 5))
    assert cm.sum() == (ref != 255).sum()
    # rows = reference, columns = prediction
    np.testing.assert_array_equal(confusion_matrix(np.array([1]), np.array([0]), 2), [[0, 1], [0, 0]])


def test_ignore_index_pixels_are_skipped():
    ref = np.array([[0, 1, 255], [1, 255, 0]])
    pred = np.array([[0, 1, 1], [1, 0, 1]])
    cm = confusion_matrix(pred, ref, 2)
    np.testing.assert_array_equal(cm, [[1, 1], [0, 2]])
    # the same as dropping those pixels; a prediction under an ignored pixel may be anything
    keep = ref != 255
    np.testing.assert_array_equal(cm, confusion_matrix(pred[keep], ref[keep], 2))
    pred_bad_under_ignore = pred.copy()
    pred_bad_under_ignore[ref == 255] = 7
    np.testing.assert_array_equal(cm, confusion_matrix(pred_bad_under_ignore, ref, 2))
    assert metrics_from_confusion(cm)["overall_accuracy"] == pytest.approx(3 / 4)
    # another ignore value
    np.testing.assert_array_equal(confusion_matrix(pred, np.where(ref == 255, 9, ref), 2, ignore_index=9), cm)


def test_bad_class_ids_raise():
    ref = np.zeros((2, 2), dtype=np.int64)
    with pytest.raises(ValueError, match=r"predicted.*\[3\]"):
        confusion_matrix(np.array([[0, 3], [1, 0]]), ref, 2)
    with pytest.raises(ValueError, match=r"predicted.*\[-1\]"):
        confusion_matrix(torch.tensor([[0, -1], [1, 0]]), ref, 2)
    with pytest.raises(ValueError, match=r"reference.*\[2, 254\]"):
        confusion_matrix(ref, np.array([[2, 254], [0, 255]]), 2)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros((2, 3), dtype=int), ref, 2)
    with pytest.raises(TypeError, match="logits"):
        confusion_matrix(np.zeros((2, 2), dtype=np.float32), ref, 2)
    with pytest.raises(ValueError, match="all zero"):
        metrics_from_confusion(np.zeros((2, 2), dtype=np.int64))


def test_accumulator_over_batches_equals_one_call():
    pred, ref = random_maps(4, 5, shape=(6, 12, 12))
    acc = SegmentationMetricAccumulator(5, id2label={0: "a", 1: "b", 2: "c", 3: "d", 4: "e"})
    for lo, hi in ((0, 1), (1, 4), (4, 6)):  # uneven batches, mixed input types
        acc.update(torch.from_numpy(pred[lo:hi]), ref[lo:hi])
    whole = confusion_matrix(pred, ref, 5)
    np.testing.assert_array_equal(acc.confusion, whole)
    result, expected = acc.compute(), metrics_from_confusion(whole)
    assert_same(result, dict(expected.items()))
    assert set(result["per_category"]) == {"a", "b", "c", "d", "e"}
    assert result["per_category"]["b"]["iou"] == pytest.approx(expected["per_category_iou"][1])
    assert math.isnan(result["per_category"]["e"]["f1"])
    acc.confusion[0, 0] += 100  # a copy
    np.testing.assert_array_equal(acc.confusion, whole)
    acc.reset()
    assert acc.confusion.sum() == 0


def test_batch_compute_metrics_flat_dict_and_reset():
    id2label = {0: "sea_surface", 1: "oil_spill"}
    compute_metrics = make_batch_compute_metrics(2, id2label=id2label)
    batches = [random_maps(seed, 2, shape=(2, 8, 8)) for seed in (5, 6, 7)]
    for pred, ref in batches[:-1]:
        assert (
            compute_metrics(SimpleNamespace(predictions=torch.from_numpy(pred), label_ids=ref), compute_result=False)
            == {}
        )
    pred, ref = batches[-1]
    flat = compute_metrics(SimpleNamespace(predictions=pred, label_ids=torch.from_numpy(ref)), compute_result=True)

    all_pred = np.concatenate([p for p, _ in batches])
    all_ref = np.concatenate([r for _, r in batches])
    expected = reference_metrics(all_pred, all_ref, 2)
    assert set(flat) == {
        "mean_iou",
        "mean_f1",
        "mean_precision",
        "mean_recall",
        "overall_accuracy",
        "mean_accuracy",
        *(f"{m}_{n}" for m in ("iou", "f1", "precision", "recall") for n in id2label.values()),
    }
    assert all(type(v) is float for v in flat.values())
    for key in ("mean_iou", "mean_f1", "mean_precision", "mean_recall", "overall_accuracy", "mean_accuracy"):
        assert flat[key] == pytest.approx(expected[key], rel=1e-12)
    assert flat["iou_oil_spill"] == pytest.approx(expected["per_category_iou"][1], rel=1e-12)
    assert flat["recall_sea_surface"] == pytest.approx(expected["per_category_recall"][0], rel=1e-12)

    # reset: the next evaluation sees only its own batch
    pred, ref = batches[0]
    again = compute_metrics(SimpleNamespace(predictions=pred, label_ids=ref), compute_result=True)
    assert again["mean_iou"] == pytest.approx(reference_metrics(pred, ref, 2)["mean_iou"], rel=1e-12)
    assert compute_metrics.accumulator.confusion.sum() == 0
    # without id2label the class index names the keys
    assert "iou_1" in flatten_metrics(metrics_from_confusion(confusion_matrix(pred, ref, 2)))


def test_format_table4_row():
    cm = np.array([[6, 2, 0], [1, 1, 0], [0, 0, 0]])  # class 2 absent
    table = format_table4_row(metrics_from_confusion(cm), {0: "sea", 1: "oil", 2: "ship"})
    header, rule, row = table.split("\n")
    cells = [c.strip() for c in row.strip("|").split("|")]
    titles = [c.strip() for c in header.strip("|").split("|")]
    assert titles[:5] == ["mIoU", "mF1", "mP", "mR", "PA"] and "IoU oil" in titles
    assert len(cells) == len(titles) == 5 + 3 * 4 and rule.count("---") == len(titles)
    # oil: TP 1, FP 2, FN 1 -> IoU 25 %; sea: TP 6, FP 1, FN 2 -> IoU 66.67 %
    assert cells[titles.index("IoU oil")] == "25.00"
    assert cells[titles.index("IoU sea")] == "66.67"
    assert cells[titles.index("PA")] == "70.00"
    assert cells[0] == f"{100 * (0.25 + 6 / 9) / 2:.2f}"
    assert cells[titles.index("F1 ship")] == "n/a"


def test_evaluate_module_matches_metrics_from_confusion():
    rng = np.random.default_rng(8)
    refs = [rng.integers(0, 3, size=(8, 8)) for _ in range(2)]
    preds = [np.where(rng.random((8, 8)) < 0.7, r, rng.integers(0, 3, size=(8, 8))) for r in refs]
    refs[0][0, :3] = 255
    id2label = {0: "sea", 1: "oil", 2: "ship"}
    metric = load_metric_module(keep_in_memory=True)
    result = metric.compute(predictions=preds, references=refs, num_labels=3, ignore_index=255, id2label=id2label)
    expected = metrics_from_confusion(confusion_matrix(np.stack(preds), np.stack(refs), 3), id2label)
    assert set(result) == set(expected)
    for key, value in expected.items():
        if key == "per_category":
            assert result[key] == value  # same code on the same counts: exact, and no NaN here
        else:
            np.testing.assert_allclose(result[key], value, rtol=1e-12, err_msg=key)


# ---------------------------------------------------------------- calibration


def numpy_calibration(probs: np.ndarray, ref: np.ndarray, bins: int = 15, ignore_index: int = 255) -> dict:
    """ECE, class-wise ECE, Brier, NLL from flat numpy arrays, with an explicit loop over (lo, hi] bins."""
    probs = np.moveaxis(probs, 1, -1).reshape(-1, probs.shape[1]).astype(np.float64)
    ref = ref.reshape(-1)
    keep = ref != ignore_index
    probs, ref = probs[keep], ref[keep]
    n, num_classes = len(ref), probs.shape[1]

    def ece(score, hit):
        total = 0.0
        for k in range(bins):
            lo, hi = k / bins, (k + 1) / bins
            inside = (score > lo) & (score <= hi) if k else (score <= hi)
            if inside.any():
                total += inside.sum() / n * abs(hit[inside].mean() - score[inside].mean())
        return total

    truth = np.eye(num_classes)[ref]
    return {
        "ece": ece(probs.max(1), (probs.argmax(1) == ref).astype(float)),
        "per_category_ece": np.array([ece(probs[:, c], truth[:, c]) for c in range(num_classes)]),
        "brier": float(((probs - truth) ** 2).sum(1).mean()),
        "nll": float(-np.log(np.maximum(probs[np.arange(n), ref], 1e-12)).mean()),
    }


def random_probabilities(seed, num_labels, shape=(3, 12, 12), sharpness=3.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(shape[0], num_labels, *shape[1:])) * sharpness
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ref = rng.integers(0, num_labels, size=shape)
    ref[rng.random(shape) < 0.05] = 255
    return probs.astype(np.float32), ref


@pytest.mark.parametrize("num_labels", [2, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_calibration_matches_an_independent_numpy_computation(seed, num_labels):
    probs, ref = random_probabilities(seed, num_labels)
    accumulator = CalibrationAccumulator(num_labels)
    for i in range(len(ref)):  # image by image: the counts add up
        accumulator.update(torch.from_numpy(probs[i : i + 1]), torch.from_numpy(ref[i : i + 1]))
    result = accumulator.compute()
    expected = numpy_calibration(probs, ref)
    for key in ("ece", "brier", "nll", "per_category_ece"):
        np.testing.assert_allclose(result[key], expected[key], rtol=1e-9, atol=1e-12, err_msg=key)
    reliability = result["reliability"]
    assert reliability["bins"] == 15 and int(reliability["count"].sum()) == int((ref != 255).sum())
    filled = reliability["count"] > 0
    assert np.isnan(reliability["confidence"][~filled]).all()
    gap = np.abs(reliability["accuracy"] - reliability["confidence"])[filled]
    ece = (reliability["count"][filled] * gap).sum() / reliability["count"].sum()
    assert ece == pytest.approx(result["ece"], rel=1e-9)


def test_perfectly_calibrated_predictions_have_zero_ece():
    # exactly: in each bin the hit rate equals the confidence (0.8 on 10 pixels, 8 right; 0.6 on 5, 3 right)
    ref = np.zeros((1, 3, 5), dtype=np.int64)
    oil = np.array([0.8] * 10 + [0.4] * 5).reshape(3, 5)  # p(oil); top class: oil at 0.8, background at 0.6
    ref[0].flat[:8] = 1
    ref[0].flat[10:12] = 1  # 3 of the 5 background-at-0.6 pixels are background
    probs = np.stack([1 - oil, oil])[None]
    accumulator = CalibrationAccumulator(2)
    accumulator.update(probs, ref)
    result = accumulator.compute()
    assert result["ece"] == pytest.approx(0.0, abs=1e-12)
    assert result["brier"] == pytest.approx(numpy_calibration(probs, ref)["brier"], rel=1e-12)
    # statistically: labels drawn from the predicted probabilities
    rng = np.random.default_rng(0)
    p_oil = rng.random((4, 128, 128))
    drawn = (rng.random(p_oil.shape) < p_oil).astype(np.int64)
    accumulator = CalibrationAccumulator(2)
    accumulator.update(np.stack([1 - p_oil, p_oil], 1), drawn)
    result = accumulator.compute()
    assert result["ece"] < 0.01 and result["per_category_ece"][1] < 0.01
    assert result["ece"] == pytest.approx(numpy_calibration(np.stack([1 - p_oil, p_oil], 1), drawn)["ece"], rel=1e-9)


def test_over_confident_predictions():
    """99 % sure everywhere, right on 60 % of the pixels: ECE = 0.39, and NLL/Brier as by hand."""
    ref = np.zeros((1, 10, 10), dtype=np.int64)
    ref[0, 6:] = 1  # the prediction says background everywhere
    probs = np.zeros((1, 2, 10, 10))
    probs[0, 0], probs[0, 1] = 0.99, 0.01
    accumulator = CalibrationAccumulator(2)
    accumulator.update(probs, ref)
    result = accumulator.compute()
    assert result["ece"] == pytest.approx(0.39, abs=1e-12)
    assert result["nll"] == pytest.approx(-(0.6 * math.log(0.99) + 0.4 * math.log(0.01)), rel=1e-12)
    assert result["brier"] == pytest.approx(0.6 * 2 * 0.01**2 + 0.4 * 2 * 0.99**2, rel=1e-12)
    # class-wise for oil: p_oil = 0.01 in one bin where 40 % are oil
    assert result["per_category_ece"][1] == pytest.approx(0.39, abs=1e-12)
    # a saturated wrong prediction: NLL is finite (clamped at 1e-12)
    accumulator.reset()
    accumulator.update(np.stack([np.ones((1, 2, 2)), np.zeros((1, 2, 2))], 1), np.ones((1, 2, 2), dtype=np.int64))
    assert accumulator.compute()["nll"] == pytest.approx(-math.log(1e-12))


def test_segmentation_accumulator_adds_calibration_and_flat_keys():
    probs, ref = random_probabilities(3, 2)
    id2label = {0: "sea", 1: "oil"}
    accumulator = SegmentationMetricAccumulator(2, id2label=id2label)
    accumulator.update(probs.argmax(1), ref, probabilities=probs)
    result = accumulator.compute()
    expected = numpy_calibration(probs, ref)
    assert result["ece"] == pytest.approx(expected["ece"], rel=1e-9)
    assert result["per_category"]["oil"]["ece"] == pytest.approx(expected["per_category_ece"][1], rel=1e-9)
    flat = flatten_metrics(result, id2label)
    assert {"ece", "brier", "nll", "ece_oil", "ece_sea"} <= set(flat)
    row = format_calibration_row(result, id2label).splitlines()
    assert row[0].split("|")[1].strip() == "ECE (%)" and "ECE oil (%)" in row[0]
    # without probabilities nothing changes
    plain = SegmentationMetricAccumulator(2, id2label=id2label)
    plain.update(probs.argmax(1), ref)
    assert "ece" not in plain.compute() and "ece" not in flatten_metrics(plain.compute(), id2label)
    with pytest.raises(ValueError, match="probabilities must be"):
        CalibrationAccumulator(3).update(probs, ref)


def test_evaluate_module_takes_probabilities_and_returns_calibration():
    probs, ref = random_probabilities(4, 2, shape=(2, 8, 8))
    metric = load_metric_module(keep_in_memory=True)
    result = metric.compute(predictions=list(probs), references=list(ref), num_labels=2, ignore_index=255)
    expected = numpy_calibration(probs, ref)
    for key in ("ece", "brier", "nll", "per_category_ece"):
        np.testing.assert_allclose(result[key], expected[key], rtol=1e-6, err_msg=key)  # stored as float32
    from_maps = metrics_from_confusion(confusion_matrix(probs.argmax(1), ref, 2))
    np.testing.assert_allclose(result["mean_iou"], from_maps["mean_iou"], rtol=1e-12)


def test_temperature_from_logits_undoes_over_confidence():
    """Labels drawn from softmax(z); the student says 3 z: the fitted T is ~3 and the ECE drops."""
    from dakter_hf.students.inference import temperature_from_logits

    g = torch.Generator().manual_seed(0)
    z = torch.randn(200_000, 2, generator=g)
    labels = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)
    temperature = temperature_from_logits(3 * z, labels)
    assert temperature == pytest.approx(3.0, rel=0.03)

    def ece(logits):
        accumulator = CalibrationAccumulator(2)
        accumulator.update(logits.softmax(1).T.reshape(1, 2, 1, -1), labels.reshape(1, 1, -1))
        return accumulator.compute()["ece"]

    assert ece(3 * z / temperature) < 0.01 < ece(3 * z)
