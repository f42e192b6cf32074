"""Segmentation metrics of the paper's Table 4, from one confusion matrix.

Everything derives from a (C, C) confusion matrix (rows = reference class,
columns = predicted class), so a whole evaluation set is summarized by C*C
integers: batches are accumulated without keeping logits or masks around, and
the numbers of a split do not depend on how it was batched.

Conventions (also those of the shipped `evaluate` module, which calls this code):

* A class absent from both predictions and references (TP + FP + FN == 0) is NaN
  in every per-category array and left out of every mean (nanmean), as in
  `evaluate`'s ``mean_iou``.
* For a class present somewhere, a 0/0 precision (never predicted) or a 0/0
  recall (never in the references) is 0, not NaN, like sklearn's
  ``zero_division=0``: a missed or hallucinated class is penalized instead of
  silently dropped. ``per_category_accuracy`` is the recall (``mean_iou``'s
  definition), so it follows the same rule; ``mean_iou`` gives NaN there for a
  class that is only predicted, so its ``mean_accuracy`` can differ from ours.

Calibration (when probabilities are given, from the same pass), likewise from
fixed-size counts (`CalibrationAccumulator`: 15 bins per class, a few sums), over
the pixels whose reference is not ignored:

* ``ece``: expected calibration error of the top-class probability, 15 equal-width
  bins (k/15, (k+1)/15], sum over bins of (pixels in bin / pixels) x |accuracy -
  mean confidence| (Guo et al. 2017);
* ``per_category_ece``: the same for each class c on p_c against [reference == c]
  (class-wise ECE, Kull et al. 2019); ``ece_<oil name>`` in the flat metrics;
* ``brier``: mean over pixels of sum_c (p_c - [reference == c])^2 (Brier 1950; 0..2);
* ``nll``: mean over pixels of -log p_reference (p clamped at 1e-12);
* ``reliability``: per top-class bin the pixel count, mean confidence and accuracy
  (NaN for an empty bin), for reliability diagrams.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np
import torch

from dakter_hf.utils.markdown import markdown_table, percent


__all__ = [
    "confusion_matrix",
    "metrics_from_confusion",
    "SegmentationMetricAccumulator",
    "CalibrationAccumulator",
    "CALIBRATION_BINS",
    "make_batch_compute_metrics",
    "flatten_metrics",
    "format_table4_row",
    "load_metric_module",
    "METRIC_MODULE_PATH",
]

CALIBRATION_BINS = 15  # equal-width confidence bins of the ECE (Guo et al. 2017)
CALIBRATION_KEYS = ("ece", "brier", "nll")
NLL_FLOOR = 1e-12  # probabilities are clamped here before the log (a saturated softmax gives 0)
# The `evaluate` module shipped with the package (see `load_metric_module`).
METRIC_MODULE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metric", "dakter_segmentation")


def _as_long_tensor(x: Any, device: Optional[torch.device]) -> torch.Tensor:
    """int64 tensor; a tensor stays on its device (or goes to `device`)."""
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() or x.is_complex():
            raise TypeError(f"expected integer class ids, got {x.dtype} (pass argmax class maps, not logits)")
        t = x
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "iub":
            raise TypeError(f"expected integer class ids, got {arr.dtype} (pass argmax class maps, not logits)")
        t = torch.from_numpy(arr.astype(np.int64))  # a writable copy: from_numpy warns on read-only arrays
    if device is not None:
        t = t.to(device)
    return t.long()


def _bad_values(values: torch.Tensor, num_labels: int) -> list:
    bad = values[(values < 0) | (values >= num_labels)]
    return torch.unique(bad)[:10].tolist()


def confusion_matrix(predictions, references, num_labels: int, ignore_index: Optional[int] = 255) -> np.ndarray:
    """(C, C) int64 counts, rows = reference class, columns = predicted class.

    `predictions` and `references` are integer class-id maps of the same shape
    (torch tensors, on any device, or array-likes). The count is one `bincount` on
    the device of the tensors; only the (C, C) result comes to the CPU. Pixels
    whose reference is `ignore_index` are skipped (predictions included); any
    other id outside [0, C) raises ValueError.
    """
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    device = next((x.device for x in (predictions, references) if isinstance(x, torch.Tensor)), None)
    pred = _as_long_tensor(predictions, device)
    ref = _as_long_tensor(references, device)
    if pred.shape != ref.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and references {tuple(ref.shape)} must have the same shape")
    pred, ref = pred.reshape(-1), ref.reshape(-1)
    if ignore_index is not None:
        keep = ref != ignore_index
        pred, ref = pred[keep], ref[keep]
    bad_ref = _bad_values(ref, num_labels)
    if bad_ref:
        raise ValueError(
            f"reference class ids outside [0, {num_labels}) and not ignore_index={ignore_index}: {bad_ref}"
        )
    bad_pred = _bad_values(pred, num_labels)
    if bad_pred:
        raise ValueError(f"predicted class ids outside [0, {num_labels}): {bad_pred}")
    counts = torch.bincount(ref * num_labels + pred, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels).cpu().numpy().astype(np.int64)


def _label_name(id2label: Optional[Mapping], c: int) -> str:
    """Name of class c; id2label keys may be ints or (after a JSON round trip) strings."""
    if id2label is None:
        return str(c)
    return str(id2label.get(c, id2label.get(str(c), c)))


def _ratio(num: np.ndarray, den: np.ndarray, present: np.ndarray) -> np.ndarray:
    """num / den with 0/0 -> 0 for present classes and NaN for absent ones."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    out[~present] = np.nan
    return out


def metrics_from_confusion(confusion: np.ndarray, id2label: Optional[Mapping] = None) -> Dict[str, Any]:
    """Table 4 metrics from a confusion matrix (see the module docstring for the NaN/0 rules).

    Keys follow `evaluate`'s ``mean_iou``: ``mean_iou``, ``mean_accuracy``,
    ``overall_accuracy``, ``per_category_iou``, ``per_category_accuracy``, plus
    ``mean_f1``, ``per_category_f1``, ``mean_precision``, ``mean_recall``,
    ``per_category_precision``, ``per_category_recall``. Means are python floats;
    per-category values are float64 numpy arrays of length C. With `id2label`,
    ``per_category`` = {name: {"iou", "f1", "precision", "recall"}} of python
    floats (NaN for an absent class), for readable JSON.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be a square (C, C) matrix, got shape {cm.shape}")
    total = cm.sum()
    if total <= 0:
        raise ValueError("the confusion matrix is all zero: no pixel was counted")
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    present = (tp + fp + fn) > 0

    iou = _ratio(tp, tp + fp + fn, present)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn, present)
    precision = _ratio(tp, tp + fp, present)
    recall = _ratio(tp, tp + fn, present)

    def mean(values: np.ndarray) -> float:
        return float(np.mean(values[present]))  # total > 0, so some class is present

    result: Dict[str, Any] = {
        "mean_iou": mean(iou),
        "mean_accuracy": mean(recall),
        "overall_accuracy": float(tp.sum() / total),
        "per_category_iou": iou,
        "per_category_accuracy": recall.copy(),
        "mean_f1": mean(f1),
        "per_category_f1": f1,
        "mean_precision": mean(precision),
        "mean_recall": mean(recall),
        "per_category_precision": precision,
        "per_category_recall": recall,
    }
    if id2label is not None:
        result["per_category"] = {
            _label_name(id2label, c): {
                "iou": float(iou[c]),
                "f1": float(f1[c]),
                "precision": float(precision[c]),
                "recall": float(recall[c]),
            }
            for c in range(cm.shape[0])
        }
    return result


def _bin_index(values: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Equal-width bins (k/n, (k+1)/n]; 0 falls in the first bin."""
    return (torch.ceil(values * num_bins).long() - 1).clamp_(0, num_bins - 1)


class CalibrationAccumulator:
    """ECE, class-wise ECE, Brier and NLL over batches of per-pixel probabilities (see the module docstring).

    Holds (C + 1) x 3 x bins sums and three scalars, whatever the number of images.
    """

    def __init__(self, num_labels: int, num_bins: int = CALIBRATION_BINS, ignore_index: Optional[int] = 255):
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        self.num_labels, self.num_bins, self.ignore_index = int(num_labels), int(num_bins), ignore_index
        self.reset()

    def reset(self) -> None:
        # [count, sum of probability, sum of hits] per bin: row 0 the top class, row 1 + c class c
        self._bins = np.zeros((self.num_labels + 1, 3, self.num_bins), dtype=np.float64)
        self._brier = self._nll = 0.0
        self._pixels = 0

    def update(self, probabilities, references) -> None:
        """Add (B, C, H, W) class probabilities (torch or numpy) and their (B, H, W) reference ids."""
        probs = probabilities
        if not isinstance(probs, torch.Tensor):
            probs = torch.from_numpy(np.asarray(probs))
        if probs.ndim != 4 or probs.shape[1] != self.num_labels:
            raise ValueError(f"probabilities must be (B, {self.num_labels}, H, W), got {tuple(probs.shape)}")
        ref = _as_long_tensor(references, probs.device)
        if ref.shape != probs.shape[:1] + probs.shape[2:]:
            raise ValueError(f"references {tuple(ref.shape)} do not match probabilities {tuple(probs.shape)}")
        probs = probs.double().permute(0, 2, 3, 1).reshape(-1, self.num_labels)
        ref = ref.reshape(-1)
        if self.ignore_index is not None:
            keep = ref != self.ignore_index
            probs, ref = probs[keep], ref[keep]
        bad = _bad_values(ref, self.num_labels)
        if bad:
            raise ValueError(
                f"reference class ids outside [0, {self.num_labels}) and not ignore_index={self.ignore_index}: {bad}"
            )
        if ref.numel() == 0:
            return
        n, bins = self.num_labels, self.num_bins
        truth = torch.nn.functional.one_hot(ref, n).double()
        confidence, predicted = probs.max(1)
        rows = [(_bin_index(confidence, bins), confidence, (predicted == ref).double())]
        rows += [(_bin_index(probs[:, c], bins), probs[:, c], truth[:, c]) for c in range(n)]
        for row, (index, probability, hit) in enumerate(rows):
            for k, weight in enumerate((None, probability, hit)):
                self._bins[row, k] += torch.bincount(index, weights=weight, minlength=bins).double().cpu().numpy()
        self._brier += float(((probs - truth) ** 2).sum())
        self._nll += float(-probs.gather(1, ref[:, None]).clamp_min(NLL_FLOOR).log().sum())
        self._pixels += int(ref.numel())

    @property
    def pixels(self) -> int:
        return self._pixels

    def compute(self) -> Dict[str, Any]:
        """{ece, brier, nll, per_category_ece, reliability} (module docstring); ValueError before any pixel."""
        if self._pixels == 0:
            raise ValueError("no pixel was counted for calibration")
        total = float(self._pixels)
        count, probability, hits = self._bins[:, 0], self._bins[:, 1], self._bins[:, 2]
        ece = np.abs(hits - probability).sum(1) / total  # sum_b n_b / N * |hits_b / n_b - p_b / n_b|
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence, accuracy = probability[0] / count[0], hits[0] / count[0]
        return {
            "ece": float(ece[0]),
            "brier": self._brier / total,
            "nll": self._nll / total,
            "per_category_ece": ece[1:].copy(),
            "reliability": {
                "bins": self.num_bins,
                "count": count[0].astype(np.int64),
                "confidence": confidence,
                "accuracy": accuracy,
            },
        }


class SegmentationMetricAccumulator:
    """Running confusion matrix over batches: what a Trainer with `batch_eval_metrics=True` needs.

    Holds only C*C integers, so the evaluation set's logits never pile up in memory. Batches given
    with their `probabilities` also feed a `CalibrationAccumulator`, whose metrics `compute` adds.
    """

    def __init__(self, num_labels: int, ignore_index: Optional[int] = 255, id2label: Optional[Mapping] = None):
        self.num_labels = int(num_labels)
        self.ignore_index = ignore_index
        self.id2label = id2label
        self.reset()

    def update(self, predictions, references, probabilities=None) -> None:
        """Add a batch of class-id maps (torch or numpy, same shape), optionally their (B, C, H, W) probabilities."""
        self._confusion += confusion_matrix(predictions, references, self.num_labels, self.ignore_index)
        if probabilities is not None:
            self._calibration.update(probabilities, references)

    def compute(self) -> Dict[str, Any]:
        result = metrics_from_confusion(self._confusion, self.id2label)
        if self._calibration.pixels:
            result.update(self._calibration.compute())
            for c, name in enumerate(result.get("per_category", {})):
                result["per_category"][name]["ece"] = float(result["per_category_ece"][c])
        return result

    def reset(self) -> None:
        self._confusion = np.zeros((self.num_labels, self.num_labels), dtype=np.int64)
        self._calibration = CalibrationAccumulator(self.num_labels, ignore_index=self.ignore_index)

    @property
    def confusion(self) -> np.ndarray:
        """A copy of the (C, C) counts so far (rows = reference, columns = prediction)."""
        return self._confusion.copy()


def flatten_metrics(result: Mapping[str, Any], id2label: Optional[Mapping] = None) -> Dict[str, float]:
    """Flat {name: python float} for logs, JSON and tables.

    Means keep their names; per-class values become ``iou_<name>``, ``f1_<name>``,
    ``precision_<name>``, ``recall_<name>`` with the name from `id2label` (or the
    class index).
    """
    flat = {
        key: float(result[key])
        for key in ("mean_iou", "mean_f1", "mean_precision", "mean_recall", "overall_accuracy", "mean_accuracy")
    }
    per_class = {
        "iou": result["per_category_iou"],
        "f1": result["per_category_f1"],
        "precision": result["per_category_precision"],
        "recall": result["per_category_recall"],
    }
    if "ece" in result:  # calibration, when probabilities were given
        flat.update({key: float(result[key]) for key in CALIBRATION_KEYS})
        per_class["ece"] = result["per_category_ece"]
    for c in range(len(result["per_category_iou"])):
        name = _label_name(id2label, c)
        for metric, values in per_class.items():
            flat[f"{metric}_{name}"] = float(values[c])
    return flat


def make_batch_compute_metrics(
    num_labels: int, ignore_index: Optional[int] = 255, id2label: Optional[Mapping] = None
) -> Callable[..., Dict[str, float]]:
    """`compute_metrics` for `Trainer(..., args=TrainingArguments(batch_eval_metrics=True))`.

    `eval_pred.predictions` must already be argmax class-id maps (B, H, W) and
    `eval_pred.label_ids` the (B, H, W) masks. Every call adds the batch to a
    running confusion matrix; the call with ``compute_result=True`` (the last batch)
    returns the flat metrics (see `flatten_metrics`) and resets for the next
    evaluation. Intermediate calls return {}.
    """
    accumulator = SegmentationMetricAccumulator(num_labels, ignore_index, id2label)

    def compute_metrics(eval_pred, compute_result: bool = False) -> Dict[str, float]:
        accumulator.update(eval_pred.predictions, eval_pred.label_ids)
        if not compute_result:
            return {}
        try:
            return flatten_metrics(accumulator.compute(), id2label)
        finally:
            accumulator.reset()

    compute_metrics.accumulator = accumulator  # for inspection
    return compute_metrics


def format_table4_row(result: Mapping[str, Any], id2label: Mapping) -> str:
    """Markdown header + one row like the paper's Table 4: percentages, 2 decimals, NaN as "n/a"."""
    flat = flatten_metrics(result, id2label)
    columns = [
        ("mIoU", "mean_iou"),
        ("mF1", "mean_f1"),
        ("mP", "mean_precision"),
        ("mR", "mean_recall"),
        ("PA", "overall_accuracy"),
    ]
    for c in range(len(result["per_category_iou"])):
        name = _label_name(id2label, c)
        for short, metric in (("IoU", "iou"), ("F1", "f1"), ("P", "precision"), ("R", "recall")):
            columns.append((f"{short} {name}", f"{metric}_{name}"))
    row = [percent(flat[key]) for _, key in columns]
    return "\n".join(markdown_table([title for title, _ in columns], [row], align="right"))


def format_calibration_row(result: Mapping[str, Any], id2label: Mapping) -> str:
    """Markdown header + one row: ECE (%), Brier, NLL and the class-wise ECE (%) of every class."""
    columns = [
        ("ECE (%)", percent(result["ece"])),
        ("Brier", f"{result['brier']:.4f}"),
        ("NLL", f"{result['nll']:.4f}"),
    ]
    columns += [(f"ECE {_label_name(id2label, c)} (%)", percent(v)) for c, v in enumerate(result["per_category_ece"])]
    return "\n".join(markdown_table([title for title, _ in columns], [[value for _, value in columns]], align="right"))


def load_metric_module(**load_kwargs):
    """`evaluate.load` of the `dakter_segmentation` module shipped in this package (no path needed).

    `load_kwargs` go to `evaluate.load` (e.g. ``keep_in_memory=True``,
    ``experiment_id=...``). Works offline: the module is loaded from a local path.
    """
    import evaluate  # slow to import; only needed here

    return evaluate.load(METRIC_MODULE_PATH, **load_kwargs)


def to_json(result: Mapping[str, Any]) -> Dict[str, Any]:
    """A metrics result as strict JSON: arrays become lists, NaN becomes null."""

    def convert(value):
        if isinstance(value, Mapping):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, (np.ndarray, list, tuple)):
            return (
                [convert(v) for v in np.asarray(value).tolist()]
                if isinstance(value, np.ndarray)
                else [convert(v) for v in value]
            )
        if isinstance(value, (float, np.floating)):
            return None if math.isnan(float(value)) else float(value)
        if isinstance(value, np.integer):
            return int(value)
        return value

    return convert(result)
