"""Segmentation students behind one factory, and their per-pixel class scores.

    build_student("segformer-b3", id2label)            random init from a config (offline)
    build_student("segformer-b3", id2label, weights="nvidia/mit-b3")   pretrained weights you have
    student_logits(model, pixel_values)                 (B, C, h, w) scores for the losses

Names: segformer-b0 .. segformer-b5 (b3 is the paper's), mask2former-swin-tiny,
deeplabv3plus-resnet18 / deeplabv3plus-resnet50, cbdnet-resnet34 (`cbdnet.py`; its
`--student_weights` may also be a transformers ResNet checkpoint, which then becomes the encoder).

Input: a grey SAR image x in [-1, 1] (x = pixel / 127.5 - 1, as for the diffusion model).
Students built here take one channel; pretrained weights usually expect three, and then
the grey channel is repeated. The choice is written into the saved config as
`sar_input = {"channels": 1 or 3, "scaling": "pixel / 127.5 - 1"}`, and the saved image
processor does the same scaling, so `AutoImageProcessor` reproduces our inputs.

Mask2Former predicts queries (a class distribution and a mask each), not per-pixel scores.
Its semantic map m_c(x) = sum_q softmax(class_q)[c] * sigmoid(mask_q(x)) is not
normalised over classes, so we normalise it, p_c = m_c / sum_c' m_c', and use
log p_c as the student's per-pixel logits: softmax(log p) = p, and a temperature acts
on them as on any logits (softmax(log p / T) is p^(1/T) renormalised). All students then
share one loss (see `losses.py`); for Mask2Former that means per-pixel CE + Dice on real
samples instead of its Hungarian-matched set loss: the routing is per sample and the
per-pixel terms make the students' arms comparable. Its own set loss remains available by
calling the model with `mask_labels` / `class_labels` yourself.
"""

from __future__ import annotations

import os
from typing import Dict, Optional

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoImageProcessor, Mask2FormerImageProcessor, SegformerImageProcessor

from dakter_hf.students.cbdnet import CBDNetForSemanticSegmentation, cbdnet_config, load_resnet_encoder
from dakter_hf.students.deeplabv3plus import DeepLabV3PlusForSemanticSegmentation, deeplabv3plus_config
from dakter_hf.utils.hub import is_hub_id


SEGFORMER_SIZES = {
    # hidden sizes, depths, decoder size (Xie et al. 2021, Table 6)
    "b0": ([32, 64, 160, 256], [2, 2, 2, 2], 256),
    "b1": ([64, 128, 320, 512], [2, 2, 2, 2], 256),
    "b2": ([64, 128, 320, 512], [3, 4, 6, 3], 768),
    "b3": ([64, 128, 320, 512], [3, 4, 18, 3], 768),
    "b4": ([64, 128, 320, 512], [3, 8, 27, 3], 768),
    "b5": ([64, 128, 320, 512], [3, 6, 40, 3], 768),
}
STUDENT_NAMES = tuple(f"segformer-{size}" for size in SEGFORMER_SIZES) + (
    "mask2former-swin-tiny",
    "deeplabv3plus-resnet18",
    "deeplabv3plus-resnet50",
    "cbdnet-resnet34",
)
FAMILY_OF_MODEL_TYPE = {
    "segformer": "segformer",
    "mask2former": "mask2former",
    "dakter_deeplabv3plus": "deeplabv3plus",
    "dakter_cbdnet": "cbdnet",
}
REMOTE_CODE_FAMILIES = ("deeplabv3plus", "cbdnet")  # saved with their modelling file: trust_remote_code=True
INPUT_SCALING = "pixel / 127.5 - 1"


def student_family(name_or_model) -> str:
    """'segformer', 'mask2former', 'deeplabv3plus' or 'cbdnet', from a factory name or a model."""
    if not isinstance(name_or_model, str):
        model_type = name_or_model.config.model_type
        return FAMILY_OF_MODEL_TYPE.get(model_type, model_type)
    for family in ("segformer", "mask2former", "deeplabv3plus", "cbdnet"):
        if name_or_model.startswith(family):
            return family
    raise ValueError(f"--student must be one of {', '.join(STUDENT_NAMES)}, got {name_or_model!r}")


def student_config(name: str, id2label: Dict[int, str], num_channels: int = 1, **overrides):
    """The transformers config of a named student (random init), with `overrides` applied."""
    if name not in STUDENT_NAMES:
        raise ValueError(f"--student must be one of {', '.join(STUDENT_NAMES)}, got {name!r}")
    labels = {
        "id2label": {int(k): v for k, v in id2label.items()},
        "label2id": {v: int(k) for k, v in id2label.items()},
    }
    family = student_family(name)
    if family == "segformer":
        from transformers import SegformerConfig

        hidden, depths, decoder = SEGFORMER_SIZES[name.split("-")[1]]
        values = {
            "num_channels": num_channels,
            "hidden_sizes": hidden,
            "depths": depths,
            "decoder_hidden_size": decoder,
            "num_attention_heads": [1, 2, 5, 8],
            "sr_ratios": [8, 4, 2, 1],
            "semantic_loss_ignore_index": 255,
        }
        values.update(overrides)
        return SegformerConfig(**values, **labels)
    if family == "mask2former":
        from transformers import Mask2FormerConfig, SwinConfig

        swin = {
            "embed_dim": 96,
            "depths": [2, 2, 6, 2],
            "num_heads": [3, 6, 12, 24],
            "window_size": 7,
            "num_channels": num_channels,
            "out_features": ["stage1", "stage2", "stage3", "stage4"],
        }
        swin.update(overrides.pop("backbone", {}))
        return Mask2FormerConfig(
            backbone_config=SwinConfig(**swin), use_pretrained_backbone=False, **overrides, **labels
        )
    if family == "cbdnet":  # overrides: CBDNetConfig fields, and `backbone` for ResNetConfig fields
        return cbdnet_config(len(id2label), id2label=labels["id2label"], num_channels=num_channels, **overrides)

    config = deeplabv3plus_config(
        len(id2label), id2label=labels["id2label"], num_channels=num_channels, backbone=name.split("-")[1]
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def model_class(family: str):
    if family == "segformer":
        from transformers import SegformerForSemanticSegmentation

        return SegformerForSemanticSegmentation
    if family == "mask2former":
        from transformers import Mask2FormerForUniversalSegmentation

        return Mask2FormerForUniversalSegmentation
    if family == "cbdnet":
        return CBDNetForSemanticSegmentation

    return DeepLabV3PlusForSemanticSegmentation


def build_student(
    name: str, id2label: Dict[int, str], weights: Optional[str] = None, seed: Optional[int] = None, **overrides
):
    """A student model: random init from its config, or `weights` (Hub id or local path).

    With `weights`, the classifier is re-initialised for `id2label` when its size
    differs; the number of input channels is whatever the weights were trained with.
    """
    family = student_family(name)
    cls = model_class(family)
    if seed is not None:
        torch.manual_seed(seed)
    if weights:
        labels = {
            "id2label": {int(k): v for k, v in id2label.items()},
            "label2id": {v: int(k) for k, v in id2label.items()},
        }
        try:
            if family == "cbdnet" and _model_type_of(weights) == "resnet":  # an (ImageNet) ResNet: the encoder only
                model = load_resnet_encoder(weights, len(id2label), labels["id2label"], **overrides)
            else:
                model = cls.from_pretrained(weights, ignore_mismatched_sizes=True, **labels)
        except OSError as error:
            raise FileNotFoundError(
                f"--student_weights {weights}: could not load {cls.__name__} weights ({error})"
            ) from None
        if student_family(model) != family:
            raise ValueError(f"--student_weights {weights} holds a {model.config.model_type} model, not a {family}")
    else:
        try:
            config = student_config(name, id2label, **overrides)
        except StrictDataclassError as error:  # a --student_config field of the wrong type: one line, no traceback
            raise ValueError(f"--student_config: {' '.join(str(error).split())}") from None
        model = cls(config)
    model.config.sar_input = {"channels": input_channels(model), "scaling": INPUT_SCALING}
    model.config.dakter_student = name
    return model


def _model_type_of(weights: str) -> Optional[str]:
    """The model_type in a checkpoint's config.json (None when it has none we can read)."""
    try:
        return AutoConfig.from_pretrained(weights).model_type
    except (OSError, ValueError):
        return None


def input_channels(model) -> int:
    """How many channels the model's first layer takes (1: grey; 3: grey repeated)."""
    config = model.config
    backbone = getattr(config, "backbone_config", None)
    if backbone is not None and hasattr(backbone, "num_channels"):
        return int(backbone.num_channels)
    return int(config.num_channels)


def to_model_input(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey images (B, 1, H, W) in [-1, 1] -> the channels the model takes."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, channels, -1, -1)
    raise ValueError(f"the model takes {channels} channel(s); got images with {images.shape[1]}")


def mask2former_semantic_logits(
    class_queries_logits: torch.Tensor, masks_queries_logits: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Mask2Former queries -> (B, C, h, w) per-pixel log-probabilities (see the module docstring)."""
    class_probabilities = class_queries_logits.float().softmax(-1)[..., :-1]  # drop "no object"
    mask_probabilities = masks_queries_logits.float().sigmoid()
    semantic = torch.einsum("bqc,bqhw->bchw", class_probabilities, mask_probabilities)
    semantic = semantic / semantic.sum(1, keepdim=True).clamp_min(eps)
    return semantic.clamp_min(eps).log()


def student_logits(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Per-pixel class scores (B, C, h, w) of any student, usable as logits by the losses.

    SegFormer and DeepLabV3+ return logits at H/4; Mask2Former's come at H/4 too, as
    log-probabilities; CBD-Net's at the input size. The caller resizes (see `losses.resize_logits`).
    """
    outputs = model(pixel_values=pixel_values)
    if hasattr(outputs, "class_queries_logits"):
        return mask2former_semantic_logits(outputs.class_queries_logits, outputs.masks_queries_logits)
    return outputs.logits


def make_image_processor(model, resolution: int):
    """The image processor saved with a student: resize, pixel / 127.5 - 1, one or three channels."""

    channels = input_channels(model)
    common = {
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5] * channels,
        "image_std": [0.5] * channels,
    }
    if student_family(model) == "mask2former":
        return Mask2FormerImageProcessor(
            size={"height": resolution, "width": resolution}, ignore_index=255, do_reduce_labels=False, **common
        )
    return SegformerImageProcessor(size={"height": resolution, "width": resolution}, do_reduce_labels=False, **common)


def load_student(path: str):
    """A saved student (any family) and its image processor, with plain transformers classes."""

    if not os.path.isdir(path) and not is_hub_id(path):
        raise FileNotFoundError(
            f"--model {path}: no such folder (expected a student saved by train_student.py, or a Hub id)"
        )
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"--model {path}: no student config there ({error})") from None
    model = model_class(student_family(_family_of_config(config))).from_pretrained(path)
    processor = AutoImageProcessor.from_pretrained(path)
    return model, processor


def _family_of_config(config) -> str:
    if config.model_type not in FAMILY_OF_MODEL_TYPE:
        expected = sorted(FAMILY_OF_MODEL_TYPE)
        raise ValueError(f"{config.model_type!r} is not a dakter student (expected one of {expected})")
    return FAMILY_OF_MODEL_TYPE[config.model_type]


def student_resolution(model, processor=None) -> Optional[int]:
    """The square input size a student was trained at (from its processor or config)."""
    size = getattr(processor, "size", None) if processor is not None else None
    if isinstance(size, dict) and "height" in size:
        return int(size["height"])
    value = getattr(model.config, "dakter_resolution", None)
    return int(value) if value else None
