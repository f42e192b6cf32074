"""Knowledge transfer to segmentation students: losses, models, data mixing, trainer, metrics.

Imports are lazy so `import dakter_hf.students` stays cheap.
"""

from dakter_hf.utils.lazy import lazy_exports


_EXPORTS = {
    "StudentLossConfig": "losses",
    "student_loss": "losses",
    "kd_loss": "losses",
    "dice_loss": "losses",
    "KD_TEMPERATURE": "losses",
    "STUDENT_NAMES": "models",
    "build_student": "models",
    "load_student": "models",
    "student_logits": "models",
    "build_training_samples": "data",
    "build_eval_samples": "data",
    "load_generated": "data",
    "student_collate": "data",
    "DAKTerTrainer": "trainer",
    "SegmentationMetricAccumulator": "metrics",
    "metrics_from_confusion": "metrics",
    "evaluate_student": "inference",
    "StudentArguments": "train",
    "StudentTrainingArguments": "train",
    "train_student": "train",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, {name: f"{__name__}.{module}" for name, module in _EXPORTS.items()})
