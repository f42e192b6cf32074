"""Real + generated training data for a student, decoded once, with one augmentation for all targets.

    samples = build_training_samples(real_train, generated=[gen_a, gen_b], scale=1.0, resolution=128)
    batch = student_collate([samples[i] for i in range(8)])
    # {"pixel_values" (B,1,R,R), "labels" (B,R,R), "soft_labels" (B,C,R,R),
    #  "has_soft_label" (B,), "is_generated" (B,)}

The generated part holds round(scale * len(real_train)) rows (the paper's 50/100/150/200 %,
Fig. 5), taken in turn from each generated dataset. Every row is resized to the student's
resolution once, when the samples are built (bilinear image, nearest mask, bilinear
soft-label logits), and kept as uint8 / float16 arrays in memory: decoding JPEG/PNG on
every step costs more than a small student's step.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import hf_hub_download
from tqdm.auto import tqdm

from dakter_hf.data.arrays import mask_to_ids, resize_pair, to_grey_array
from dakter_hf.data.decoded import unit_range_table
from dakter_hf.data.features import class_names_of
from dakter_hf.data.sources import load_saved
from dakter_hf.data.transforms import dihedral, draw_dihedral
from dakter_hf.errors import DataError
from dakter_hf.utils.hub import is_hub_id
from dakter_hf.utils.ownership import check_generated, is_generated_card


UNIT_RANGE = unit_range_table()  # uint8 grey -> [-1, 1] by lookup
AUGMENTATION_SCALES = (0.5, 1.0, 1.5, 2.0)  # the paper's Fig. 5 (any positive value is accepted)


def load_generated(spec: str) -> datasets.Dataset:
    """A generated dataset (train split) from a `dakter generate` folder or a Hub dataset id."""

    if os.path.isdir(spec):
        check_generated(spec)  # generated means generated, in every mode
        return load_saved(spec, split="train")["train"]
    if is_hub_id(spec):
        try:
            dataset = datasets.load_dataset(spec, split="train")
        except Exception as error:  # datasets raises many kinds here (offline, missing repo, ...)
            raise DataError(
                f"--generated {spec}: could not load this Hub dataset ({type(error).__name__}: {error})"
            ) from None
        _check_generated_card(spec)
        return dataset
    raise DataError(
        f"--generated {spec}: no such folder (expected a folder written by `dakter generate`, or a Hub dataset id)"
    )


def _check_generated_card(repo_id: str) -> None:
    """A Hub dataset is generated when its card is the one `dakter generate` writes."""
    try:
        card = hf_hub_download(repo_id, "README.md", repo_type="dataset")
    except Exception as error:  # offline without a cached card, no card, ...
        raise DataError(
            f"--generated {repo_id}: could not read its dataset card ({type(error).__name__}), so it cannot be "
            "recognised as written by `dakter generate`"
        ) from None
    if not is_generated_card(card):
        raise DataError(
            f"--generated {repo_id}: its dataset card is not one written by `dakter generate`; --generated takes "
            "only generated sets (real data goes to --real)"
        )


def generated_rows(real_count: int, generated: Sequence[datasets.Dataset], scale: float) -> List[tuple]:
    """(dataset index, row index) of the generated rows used: round(scale * real_count), in turn from each set."""
    if not scale > 0:
        raise ValueError(f"--scale must be > 0, got {scale}")
    if not math.isfinite(scale * real_count):
        raise ValueError(f"--scale {scale} of {real_count} real images is not a finite number of generated rows")
    wanted = int(round(scale * real_count))
    available = sum(len(g) for g in generated)
    if wanted > available:
        raise DataError(
            f"--scale {scale} of {real_count} real images needs {wanted} generated rows; the generated set(s) hold "
            f"{available}"
        )
    rows, cursor = [], [0] * len(generated)
    while len(rows) < wanted:
        for index, dataset in enumerate(generated):
            if cursor[index] < len(dataset) and len(rows) < wanted:
                rows.append((index, cursor[index]))
                cursor[index] += 1
    return rows


class StudentSamples(torch.utils.data.Dataset):
    """Decoded, resized training samples; `augment` applies one random dihedral transform per item.

    SAR scenes have no preferred orientation, so flips and rot90 are all valid; the same
    transform moves the image, the mask and the soft label.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        soft_labels: Optional[np.ndarray],
        soft_index: np.ndarray,
        is_generated: np.ndarray,
        num_classes: int,
        augment: bool = False,
    ):
        self.images, self.masks, self.soft_labels = images, masks, soft_labels
        self.soft_index, self.is_generated = soft_index, is_generated
        self.num_classes, self.augment = num_classes, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        image = UNIT_RANGE[torch.from_numpy(self.images[index]).long()][None]  # same values as image_to_unit_range
        labels = torch.from_numpy(self.masks[index].astype(np.int64))
        slot = int(self.soft_index[index])
        if slot >= 0:
            soft = torch.from_numpy(self.soft_labels[slot].astype(np.float32))
        else:
            soft = torch.zeros((self.num_classes, *labels.shape), dtype=torch.float32)
        if self.augment:
            k, flip = draw_dihedral()
            image, labels, soft = (dihedral(t, k, flip).contiguous() for t in (image, labels, soft))
        return {
            "pixel_values": image,
            "labels": labels,
            "soft_labels": soft,
            "has_soft_label": torch.tensor(slot >= 0),
            "is_generated": torch.tensor(bool(self.is_generated[index])),
        }


def student_collate(rows: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


def _decode_real(split, resolution: int, desc: str, native_masks: bool = False):
    """Images resized to `resolution`; masks too, or kept at their own size (`native_masks`)."""
    images, masks = [], []
    for row in tqdm(split.select_columns(["image", "mask"]), desc=desc, total=len(split), leave=False):
        image, mask = resize_pair(row["image"], row["mask"], resolution)
        images.append(np.asarray(to_grey_array(image), dtype=np.uint8))
        masks.append(mask_to_ids(row["mask"] if native_masks else mask).astype(np.uint8))
    return images, masks


def resize_soft_label(soft_label, resolution: int) -> np.ndarray:
    """(C, h, w) logits -> (C, R, R) float16, bilinear."""
    tensor = torch.as_tensor(np.asarray(soft_label, dtype=np.float32))
    if tensor.shape[-1] != resolution or tensor.shape[-2] != resolution:
        tensor = F.interpolate(tensor[None], size=(resolution, resolution), mode="bilinear", align_corners=False)[0]
    return tensor.numpy().astype(np.float16)


def check_generated_columns(generated: Sequence[datasets.Dataset], class_names, use_soft_labels: bool) -> None:
    """The generated sets have the real data's classes and, for the KD arm, soft labels (checked before any write)."""
    for dataset in generated:
        if class_names_of(dataset) != list(class_names):
            raise DataError(f"a generated dataset has classes {class_names_of(dataset)}, the real data {class_names}")
        if use_soft_labels and "soft_label" not in dataset.column_names:
            raise DataError(
                "a generated dataset has no soft_label column (made by an L2-label generator?); use --mode hard"
            )


def build_training_samples(
    real_train: datasets.Dataset,
    resolution: int,
    generated: Sequence[datasets.Dataset] = (),
    scale: float = 1.0,
    use_soft_labels: bool = True,
    teacher_soft_labels: Optional[np.ndarray] = None,
    augment: bool = True,
) -> StudentSamples:
    """Real rows, then the generated rows chosen by `scale`, as one decoded StudentSamples.

    use_soft_labels: keep the generated soft labels (the `dakter` mode) or train on their
        argmax only (the `hard` mode, the paper's "without KD").
    teacher_soft_labels: (N_real, C, R, R) soft labels of a teacher on the real images
        (the teacher-KD baseline); real samples then also get the KD term.
    """
    class_names = class_names_of(real_train)
    num_classes = len(class_names)
    images, masks = _decode_real(real_train, resolution, "decoding real images")
    soft, soft_index, flags = [], [-1] * len(images), [False] * len(images)
    if teacher_soft_labels is not None:
        if len(teacher_soft_labels) != len(images):
            raise ValueError(
                f"teacher soft labels cover {len(teacher_soft_labels)} images, the real split has {len(images)}"
            )
        soft = [resize_soft_label(s, resolution) for s in teacher_soft_labels]
        soft_index = list(range(len(images)))
    check_generated_columns(generated, class_names, use_soft_labels)
    chosen = generated_rows(len(images), generated, scale) if generated else []
    for dataset_index, row_index in tqdm(chosen, desc="decoding generated samples", leave=False):
        row = generated[dataset_index][row_index]
        image, mask = resize_pair(row["image"], row["mask"], resolution)
        images.append(np.asarray(to_grey_array(image), dtype=np.uint8))
        flags.append(True)
        if "soft_label" in row:  # the hard label is the argmax at this size, in both the hard and the KD arm
            logits = resize_soft_label(row["soft_label"], resolution)
            masks.append(logits.astype(np.float32).argmax(0).astype(np.uint8))
        else:  # generators trained with L2 labels store only the mask
            masks.append(mask_to_ids(mask).astype(np.uint8))
        if use_soft_labels:
            soft_index.append(len(soft))
            soft.append(logits)
        else:
            soft_index.append(-1)
    return StudentSamples(
        images=np.stack(images),
        masks=np.stack(masks),
        soft_labels=np.stack(soft) if soft else None,
        soft_index=np.asarray(soft_index, dtype=np.int64),
        is_generated=np.asarray(flags, dtype=bool),
        num_classes=num_classes,
        augment=augment,
    )


def build_eval_samples(split: datasets.Dataset, resolution: int) -> StudentSamples:
    """A real split for evaluation: images at the student's resolution, masks at their own size.

    Predictions are upsampled to the mask, so metrics are measured on the labels as
    annotated, not on a resized copy. Masks of mixed sizes are resized to `resolution`.
    """
    images, masks = _decode_real(split, resolution, "decoding evaluation images", native_masks=True)
    if len({m.shape for m in masks}) > 1:
        images, masks = _decode_real(split, resolution, "decoding evaluation images")
    count = len(images)
    return StudentSamples(
        np.stack(images),
        np.stack(masks),
        None,
        np.full(count, -1),
        np.zeros(count, dtype=bool),
        len(class_names_of(split)),
        augment=False,
    )
