"""DAKTer segmentation metrics (the paper's Table 4) as an `evaluate` module.

Load it offline by path, e.g. ``dakter_hf.students.metrics.load_metric_module()``
or ``evaluate.load("<this folder>")``. The math lives in
`dakter_hf.students.metrics`; this module only adapts it to `evaluate`.
(`evaluate` scans this file's import lines for dependencies and copies it into
its modules cache, so the imports below are top level, one per line.)
"""

import datasets
import evaluate
import numpy as np

from dakter_hf.students import metrics as dakter_metrics


_DESCRIPTION = """\
Semantic segmentation metrics of the DAKTer paper's Table 4, all derived from one
confusion matrix summed over the image pairs: mean IoU, mean F1, mean precision,
mean recall, pixel (overall) accuracy, and the same per class.

A class absent from both predictions and references is NaN per category and left
out of every mean. For a class present somewhere, a 0/0 precision (never
predicted) or recall (never in the references) counts as 0, penalizing a missed
or hallucinated class (like sklearn's zero_division=0). Keys follow the
`mean_iou` metric (mean_iou, mean_accuracy, overall_accuracy, per_category_iou,
per_category_accuracy), with per_category_accuracy = recall.

Predictions may instead be per-pixel class probabilities, one (C, height, width)
array per image: the class map is their argmax, and the result adds calibration
metrics from the same pass (`dakter_hf.students.metrics.CalibrationAccumulator`):
ece (15 equal-width bins on the top-class probability), per_category_ece
(class-wise), brier, nll and the reliability bins. Each image is added to fixed-size
bin counts and dropped, but `evaluate` hands `_compute` every stored input at once:
for a split larger than memory use `SegmentationMetricAccumulator` batch by batch
(what `dakter evaluate` does).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`List[ndarray]`):
        Predicted class-id maps, one 2D array (height, width) per image; sizes may differ between images.
        Or class probabilities, one 3D array (num_labels, height, width) per image: adds calibration.
    references (`List[ndarray]`):
        Ground-truth class-id maps, each the same size as its prediction.
    num_labels (`int`):
        Number of classes C.
    ignore_index (`int`, defaults to 255):
        Reference value of pixels left out of every count.
    id2label (`Dict[int, str]`, *optional*):
        Class names; when given, the result also has `per_category`, {name: {iou, f1, precision, recall}}.

Returns:
    `Dict[str, float | ndarray]`:
        mean_iou, mean_accuracy, overall_accuracy, mean_f1, mean_precision, mean_recall (floats);
        per_category_iou, per_category_accuracy, per_category_f1, per_category_precision,
        per_category_recall (float64 arrays of length C, NaN for a class absent from both inputs).
        With probabilities also ece, brier, nll (floats), per_category_ece (length C) and
        reliability ({bins, count, confidence, accuracy} per top-class bin).

Examples:

    >>> import numpy as np
    >>> from dakter_hf.students.metrics import load_metric_module
    >>> metric = load_metric_module()
    >>> predicted = [np.array([[0, 1], [1, 1]])]
    >>> ground_truth = [np.array([[0, 1], [0, 255]])]
    >>> results = metric.compute(predictions=predicted, references=ground_truth, num_labels=2)
    >>> round(results["mean_iou"], 4)
    0.5
"""

_CITATION = """\
@misc{dakter,
  title = {{DAKTer}: diffusion-based data augmentation and knowledge transfer with generated soft labels
           for {SAR} oil-spill segmentation},
  note = {Segmentation metrics of Table 4; implementation in dakter-hf}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DakterSegmentation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("uint16"))),
                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint16"))),
                    }
                ),
                datasets.Features(  # per-pixel class probabilities (C, H, W): calibration too
                    {
                        "predictions": datasets.Sequence(
                            datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
                        ),
                        "references": datasets.Sequence(datasets.Sequence(datasets.Value("uint16"))),
                    }
                ),
            ],
            reference_urls=["https://huggingface.co/spaces/evaluate-metric/mean_iou"],
        )

    def _compute(self, predictions, references, num_labels, ignore_index=255, id2label=None):
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
        accumulator = dakter_metrics.SegmentationMetricAccumulator(num_labels, ignore_index, id2label)
        for prediction, reference in zip(predictions, references):  # images may differ in size
            prediction, reference = np.asarray(prediction), np.asarray(reference)
            if prediction.ndim == 3:  # probabilities: argmax, and calibration from the same pass
                accumulator.update(prediction.argmax(0)[None], reference[None], probabilities=prediction[None])
            else:
                accumulator.update(prediction, reference)
        return accumulator.compute()
