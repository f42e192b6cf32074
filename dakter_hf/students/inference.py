"""Run a trained student: per-pixel probabilities for batches, splits and whole scenes.

One place for "image in [-1, 1] -> class probabilities at the image's size", used by
`dakter evaluate`, `dakter segment`, the teacher-KD baseline and the Space.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dakter_hf.data.arrays import image_to_unit_range, mask_to_ids
from dakter_hf.data.features import class_names_of
from dakter_hf.students.data import build_eval_samples, student_collate
from dakter_hf.students.losses import IGNORE_INDEX, resize_logits
from dakter_hf.students.metrics import SegmentationMetricAccumulator
from dakter_hf.students.models import input_channels, student_logits, to_model_input


def student_predictor(model, device: Optional[str] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """`predict(images (B, 1, H, W) in [-1, 1]) -> logits (B, C, H, W)` at the input size, no grad."""
    device = torch.device(device) if device else next(model.parameters()).device
    model = model.to(device).eval()
    channels = input_channels(model)

    @torch.no_grad()
    def predict(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device)
        logits = student_logits(model, to_model_input(images, channels))
        return resize_logits(logits, images.shape[-2:]).float()

    return predict


def probability_predictor(model, device: Optional[str] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Like `student_predictor`, returning softmax probabilities (what tiling blends)."""
    predict = student_predictor(model, device)
    return lambda images: predict(images).softmax(1)


def grey_to_unit_tensor(image) -> torch.Tensor:
    """A grey uint8 image (PIL or array) -> (1, H, W) float tensor in [-1, 1]."""

    return torch.from_numpy(image_to_unit_range(image).astype(np.float32))[None]


def predict_split(
    model, split, resolution: int, batch_size: int = 16, device: Optional[str] = None, desc: Optional[str] = None
):
    """(logits at the input size, labels) per batch of a real split, images resized to `resolution`."""

    predict = student_predictor(model, device)
    loader = torch.utils.data.DataLoader(
        build_eval_samples(split, resolution), batch_size=batch_size, collate_fn=student_collate
    )
    for batch in tqdm(loader, desc=desc, disable=desc is None, leave=False):
        logits = predict(batch["pixel_values"])
        yield logits, batch["labels"].to(logits.device)


def evaluate_student(
    model,
    split,
    resolution: int,
    batch_size: int = 16,
    device: Optional[str] = None,
    show_progress: bool = True,
    temperature: float = 1.0,
) -> dict:
    """Table-4 and calibration metrics of `model` on a real split (predictions upsampled to the masks' size).

    The probabilities of each batch go to the accumulator's bin counts and are dropped: memory does
    not grow with the split. `temperature` divides the logits (calibration only: the argmax is unchanged).
    """

    names = class_names_of(split)
    if model.config.num_labels != len(names):
        raise ValueError(
            f"the student predicts {model.config.num_labels} classes, the data has {len(names)} ({names})"
        )
    accumulator = SegmentationMetricAccumulator(len(names), id2label=dict(enumerate(names)))
    for logits, labels in predict_split(
        model, split, resolution, batch_size, device, desc="evaluating" if show_progress else None
    ):
        probabilities = (resize_logits(logits, labels.shape[-2:]) / temperature).softmax(1)
        accumulator.update(probabilities.argmax(1), labels, probabilities=probabilities)
    result = accumulator.compute()
    result["num_images"] = len(split)
    return result


def temperature_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimising the mean NLL of softmax(logits / T) for (N, C) logits and (N,) labels (LBFGS on log T)."""
    logits, labels = logits.detach().float(), labels.detach().long()
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def fit_temperature(
    model,
    split,
    resolution: int,
    batch_size: int = 16,
    device: Optional[str] = None,
    max_pixels: int = 1_000_000,
    seed: int = 0,
) -> float:
    """Temperature scaling (Guo et al. 2017): T fitted by NLL on `split`, a held-out part of train (never test).

    Keeps the logits (at the masks' size) of at most `max_pixels` valid pixels, drawn evenly over the images.
    """
    per_image = max(1, max_pixels // max(1, len(split)))
    generator = torch.Generator().manual_seed(seed)
    kept_logits, kept_labels = [], []
    for logits, labels in predict_split(model, split, resolution, batch_size, device):
        logits = resize_logits(logits, labels.shape[-2:]).permute(0, 2, 3, 1).cpu()
        for image_logits, image_labels in zip(logits, labels.cpu()):
            valid = (image_labels != IGNORE_INDEX).flatten().nonzero().squeeze(1)
            pick = valid[torch.randperm(len(valid), generator=generator)[:per_image]]
            kept_logits.append(image_logits.reshape(-1, image_logits.shape[-1])[pick])
            kept_labels.append(image_labels.flatten()[pick])
    return temperature_from_logits(torch.cat(kept_logits), torch.cat(kept_labels))


def evaluate_constant(split, class_id: int) -> dict:
    """Table-4 metrics of the predictor that says `class_id` everywhere (e.g. the all-background baseline)."""

    names = class_names_of(split)
    if not 0 <= class_id < len(names):
        raise ValueError(f"--constant must be a class id in 0..{len(names) - 1} ({names}), got {class_id}")
    accumulator = SegmentationMetricAccumulator(len(names), id2label=dict(enumerate(names)))
    for mask in split.select_columns(["mask"])["mask"]:
        ids = mask_to_ids(mask)
        accumulator.update(np.full_like(ids, class_id), ids)
    result = accumulator.compute()
    result["num_images"] = len(split)
    return result
