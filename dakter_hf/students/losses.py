"""The student losses of DAKTer (Eq. 3-6), and the per-sample routing between real and generated data.

This is the only place the knowledge-transfer math lives: the trainer, the benchmark,
the tests and the experiment runner all call :func:`student_loss`.

How Eq. 5 is read. The paper trains a student with

    real samples (D):        lambda_ce * CE(mask) + lambda_dice * Dice            (Eq. 6)
    generated samples (D^a): lambda_kd * KD(soft label) + lambda_dice * Dice      (Eq. 5)

Read literally, Eq. 5 has no hard-label term. We add lambda_ce * CE against the argmax
of the soft label for generated samples by default (``generated_ce=True``), for two
reasons: (1) with lambda_kd = 0.1 and T = 2 the soft term alone carries 0.1 * T^2 = 0.4
of the weight a real sample gets, so generated data would be a weak, mostly Dice-driven
signal; Hinton-style distillation pairs the soft term with a hard one. (2) The paper's
"DAKTer without KD" arm trains on argmax labels with CE; with the CE term kept, the KD
arm differs from it by exactly the KD term, which makes the comparison an ablation of
the soft labels alone. ``generated_ce=False`` gives the literal Eq. 5.

Dice targets: the one-hot mask for real samples; for generated samples the argmax one-hot
(``generated_dice_target="hard"``, the default), so that the KD arm differs from the
"without KD" arm by the KD term and nothing else, or the soft label's class probabilities
at T = 1 ("soft").

Boundary term (CBD-Net's boundary supervision, optional: ``boundary_weight``, 0 by default;
train.py gives ``cbdnet-resnet34`` students the reference's 1). The edge definition of the
reference (``boundary_bce_loss2.py``): the edge of a class map m is maxpool_3(1 - m) - (1 - m),
the pixels of the class with a pixel of another class in their 3 x 3 neighbourhood (the image
border is no edge), computed on the one-hot target and, softly, on the predicted probabilities;
an edge counts as found within the other's edge dilated by a 5 x 5 maxpool. The term is
1 - boundary F1 (precision of the predicted edge, recall of the true one), averaged over
classes. The reference multiplies (BCE + Dice) by this term; here it is added with its own
weight, like every other term, so it routes per sample. For generated samples the targets are
the argmax labels, so the edges are the argmax edges. A class without edges in a sample
(e.g. no oil) has BF1 = 0 and adds a constant 1 (no gradient), as in the reference.

Resolution: student logits at another size (SegFormer and DeepLabV3+ give H/4) are
upsampled bilinearly to the label size before every term, as SegFormer's own loss does,
so the soft labels are used at full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


KD_TEMPERATURE = 2.0  # the paper's T (Eq. 3)
IGNORE_INDEX = 255  # label value excluded from every loss and metric (transformers' segmentation default)
BOUNDARY_WEIGHT = 1.0  # CBD-Net reference's weight of the boundary term (cbdnet-resnet34 students' default)
BOUNDARY_KERNEL, BOUNDARY_EXTENSION = 3, 5  # the reference's theta0 (edge) and theta (tolerance) windows


@dataclass
class StudentLossConfig:
    """Weights and options of the student loss (defaults: the paper's T = 2, 1 / 0.1 / 0.5)."""

    temperature: float = KD_TEMPERATURE
    ce_weight: float = 1.0
    kd_weight: float = 0.1
    dice_weight: float = 0.5
    generated_ce: bool = True
    generated_dice_target: str = "hard"
    ignore_index: int = IGNORE_INDEX
    boundary_weight: float = 0.0
    boundary_kernel: int = BOUNDARY_KERNEL
    boundary_extension: int = BOUNDARY_EXTENSION

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("boundary_kernel", "boundary_extension"):
            if getattr(self, name) < 1 or getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be an odd number >= 1, got {getattr(self, name)}")
        for name in ("ce_weight", "kd_weight", "dice_weight", "boundary_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.generated_dice_target not in ("soft", "hard"):
            raise ValueError(f"generated_dice_target must be 'soft' or 'hard', got {self.generated_dice_target!r}")


@dataclass
class StudentLossOutput:
    """Per-sample terms (B,), unweighted, and the weighted per-sample total."""

    per_sample: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor
    dice: torch.Tensor
    boundary: torch.Tensor  # 1 - boundary F1 (zeros when boundary_weight is 0: not computed)


def resize_logits(logits: torch.Tensor, size) -> torch.Tensor:
    """Student logits (B, C, h, w) -> (B, C, H, W), bilinear (identity when the size matches)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def _valid(labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    return (labels != ignore_index).to(torch.float32)


def _per_sample_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the valid pixels of each sample; (B, H, W) -> (B,)."""
    return (values * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1.0)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Per-sample pixel-mean cross-entropy against hard labels; (B,)."""
    safe = torch.where(labels == ignore_index, torch.zeros_like(labels), labels)
    pixel = F.cross_entropy(logits.float(), safe, reduction="none")
    return _per_sample_mean(pixel, _valid(labels, ignore_index))


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = KD_TEMPERATURE,
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """T^2 * mean over pixels of KL(q || softmax(student / T)), q = softmax(teacher / T); (B,).

    KL differs from the paper's cross-entropy form (Eq. 4) by the entropy of q, which
    does not depend on the student: the gradients are identical, and KL is 0 for a
    perfect student, which makes the logged value readable.
    """
    log_q = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    pixel = (log_q.exp() * (log_q - log_p)).sum(1)
    if valid is None:
        valid = torch.ones_like(pixel)
    return temperature**2 * _per_sample_mean(pixel, valid)


def dice_loss(
    probabilities: torch.Tensor, targets: torch.Tensor, valid: Optional[torch.Tensor] = None, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Dice loss per sample, 1 - mean over classes of (2|P T| + s) / (|P| + |T| + s); (B,).

    `probabilities` and `targets` are (B, C, H, W); targets may be one-hot or soft. The
    smoothing term makes a class absent from both count as a perfect match.
    """
    probabilities, targets = probabilities.float(), targets.float()
    if valid is not None:
        probabilities, targets = probabilities * valid[:, None], targets * valid[:, None]
    intersection = (probabilities * targets).flatten(2).sum(-1)
    total = probabilities.flatten(2).sum(-1) + targets.flatten(2).sum(-1)
    return 1.0 - ((2.0 * intersection + smooth) / (total + smooth)).mean(1)


def class_edges(
    maps: torch.Tensor, kernel: int = BOUNDARY_KERNEL, valid: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Inner edges of (B, C, H, W) class maps, maxpool_k(1 - m) - (1 - m): 1 on a class pixel next to another class.

    On soft maps (probabilities) the edge is soft. Max pooling pads with -inf, so the image border is no edge;
    likewise ignored pixels (`valid` (B, H, W) = 0) neither are edges nor make their neighbours edges.
    """
    outside = 1.0 - maps
    if valid is not None:
        outside = outside * valid[:, None]
    edges = F.max_pool2d(outside, kernel, stride=1, padding=(kernel - 1) // 2) - outside
    return edges if valid is None else edges * valid[:, None]


def boundary_loss(
    probabilities: torch.Tensor,
    targets: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    kernel: int = BOUNDARY_KERNEL,
    extension: int = BOUNDARY_EXTENSION,
    eps: float = 1e-7,
) -> torch.Tensor:
    """CBD-Net's boundary term per sample: mean over classes of 1 - BF1; (B,).

    P = |E_pred * dilate(E_true)| / |E_pred|, R = |dilate(E_pred) * E_true| / |E_true|, BF1 = 2PR / (P + R),
    with E the `class_edges` of the probabilities and of the (one-hot) targets and dilate a stride-1
    maxpool of size `extension`. Ignored pixels (`valid` = 0) count as image border (see `class_edges`), so
    the term does not depend on the predictions there.
    """
    probabilities, targets = probabilities.float(), targets.float()
    predicted, true = class_edges(probabilities, kernel, valid), class_edges(targets, kernel, valid)
    pad = (extension - 1) // 2
    predicted_wide = F.max_pool2d(predicted, extension, stride=1, padding=pad)
    true_wide = F.max_pool2d(true, extension, stride=1, padding=pad)
    precision = (predicted * true_wide).flatten(2).sum(-1) / (predicted.flatten(2).sum(-1) + eps)
    recall = (predicted_wide * true).flatten(2).sum(-1) / (true.flatten(2).sum(-1) + eps)
    f1 = 2 * precision * recall / (precision + recall + eps)
    return (1.0 - f1).mean(1)


def one_hot(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, H, W) class ids -> (B, C, H, W) float one-hot; ignored pixels are all zero."""
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    encoded = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    return encoded * valid[:, None]


def student_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    soft_labels: Optional[torch.Tensor] = None,
    has_soft_label: Optional[torch.Tensor] = None,
    is_generated: Optional[torch.Tensor] = None,
    config: Optional[StudentLossConfig] = None,
) -> StudentLossOutput:
    """The routed DAKTer student loss of one batch, per sample.

    Args:
        logits: student per-pixel class scores (B, C, h, w), any h, w (upsampled to H, W).
        labels: (B, H, W) class ids; for generated samples the argmax of their soft label.
        soft_labels: (B, C, H, W) soft-label logits (zeros where a sample has none).
        has_soft_label: (B,) bool, the KD term applies (generated samples; real samples
            of the teacher-KD baseline).
        is_generated: (B,) bool, the sample comes from D^a (selects the generated-sample
            CE and Dice options).
    Returns per-sample terms; the batch loss is their mean (or sum / count under
    gradient accumulation, see :class:`DAKTerTrainer`).
    """
    config = config or StudentLossConfig()
    batch, num_classes = logits.shape[0], logits.shape[1]
    logits = resize_logits(logits, labels.shape[-2:])
    device = logits.device
    has_soft_label = (
        torch.zeros(batch, dtype=torch.bool, device=device)
        if has_soft_label is None
        else has_soft_label.to(device).bool()
    )
    is_generated = (
        torch.zeros(batch, dtype=torch.bool, device=device) if is_generated is None else is_generated.to(device).bool()
    )
    any_soft = bool(has_soft_label.any())  # one device sync per batch
    if any_soft and soft_labels is None:
        raise ValueError("has_soft_label is set for some samples but no soft_labels were given")
    valid = _valid(labels, config.ignore_index)

    ce = cross_entropy(logits, labels, config.ignore_index)
    probabilities = logits.float().softmax(1)
    dice_targets = one_hot(labels, num_classes, config.ignore_index)
    zeros = torch.zeros(batch, device=device)
    kd = zeros
    if any_soft:
        if soft_labels.shape[1] != num_classes:
            raise ValueError(f"soft labels have {soft_labels.shape[1]} classes, the student {num_classes}")
        soft_labels = soft_labels.to(device)
        kd = torch.where(has_soft_label, kd_loss(logits, soft_labels, config.temperature, valid), zeros)
        if config.generated_dice_target == "soft":
            soft_targets = soft_labels.float().softmax(1)
            use_soft = (is_generated & has_soft_label)[:, None, None, None]
            dice_targets = torch.where(use_soft, soft_targets, dice_targets)
    dice = dice_loss(probabilities, dice_targets, valid)
    boundary = zeros
    if config.boundary_weight > 0:  # against the labels: the mask, or a generated sample's argmax
        edges_of = one_hot(labels, num_classes, config.ignore_index)
        boundary = boundary_loss(probabilities, edges_of, valid, config.boundary_kernel, config.boundary_extension)

    ce_weight = torch.full((batch,), config.ce_weight, device=device)
    if not config.generated_ce:
        ce_weight = torch.where(is_generated, zeros, ce_weight)
    per_sample = ce_weight * ce + config.kd_weight * kd + config.dice_weight * dice + config.boundary_weight * boundary
    return StudentLossOutput(per_sample=per_sample, ce=ce, kd=kd, dice=dice, boundary=boundary)
