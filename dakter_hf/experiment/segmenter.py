"""The joint model as a segmenter: `pipeline.segment(images)` scored on a real split like a student.

Same images (`build_eval_samples` at the UNet's sample size, masks at their own size), same
upsampling of the logits to the masks (`resize_logits`) and the same accumulator
(`SegmentationMetricAccumulator`: confusion-matrix IoU/F1 and the calibration bins) as
`students.inference.evaluate_student`, so its mIoU and ECE are one more row of Table 1.
"""

from __future__ import annotations

from typing import Optional

import torch

from dakter_hf.data.features import class_names_of
from dakter_hf.students.data import build_eval_samples, student_collate
from dakter_hf.students.losses import resize_logits
from dakter_hf.students.metrics import SegmentationMetricAccumulator


def evaluate_segmenter(
    pipeline, split, label_timestep: Optional[int] = None, seed: int = 0, batch_size: int = 16
) -> dict:
    """Table-1 metrics of `pipeline.segment` (logits (B, C, H, W) from images (B, 1, H, W) in [-1, 1]) on `split`.

    The label noise of `segment` is drawn from one generator seeded with `seed`, batch after batch.
    """
    names = class_names_of(split)
    classes = getattr(pipeline, "num_classes", len(names))
    if classes != len(names):
        raise ValueError(f"the joint model predicts {classes} classes, the data has {len(names)} ({names})")
    resolution = int(pipeline.unet.config.sample_size)
    accumulator = SegmentationMetricAccumulator(len(names), id2label=dict(enumerate(names)))
    loader = torch.utils.data.DataLoader(
        build_eval_samples(split, resolution), batch_size=batch_size, collate_fn=student_collate
    )
    generator = torch.Generator().manual_seed(int(seed))
    for batch in loader:
        logits = pipeline.segment(batch["pixel_values"], label_timestep=label_timestep, generator=generator)
        labels = batch["labels"]
        probabilities = resize_logits(logits.float().cpu(), labels.shape[-2:]).softmax(1)
        accumulator.update(probabilities.argmax(1), labels, probabilities=probabilities)
    result = accumulator.compute()
    result["num_images"] = len(split)
    return result
