"""Figures people look at: image | oil probability | mask triplets (like the paper's Fig. 2/7)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

from dakter_hf.data.features import class_names_of, oil_class_index


# background/sea black, oil cyan, look-alike red, ship brown, land green (OSD colours)
PALETTE = np.array(
    [(0, 0, 0), (0, 255, 255), (255, 0, 0), (153, 76, 0), (0, 153, 0)]
    + [(255, 255, 0), (255, 0, 255), (128, 128, 255)],
    dtype=np.uint8,
)


def _heat(prob: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB 'inferno'-like ramp (black, purple, orange, yellow) without matplotlib."""
    stops = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)
    position = np.clip(prob, 0, 1) * (len(stops) - 1)
    low = np.floor(position).astype(int).clip(0, len(stops) - 2)
    frac = (position - low)[..., None]
    return (stops[low] * (1 - frac) + stops[low + 1] * frac).astype(np.uint8)


def triplet_grid(
    images: np.ndarray,
    masks: np.ndarray,
    probabilities: Optional[np.ndarray] = None,
    columns: int = 4,
    pad: int = 2,
) -> Image.Image:
    """Grid of (image | probability | mask) triplets.

    Args:
        images: (B, H, W) grey in [0, 1].
        masks: (B, H, W) class ids.
        probabilities: (B, H, W) probability of the class of interest (oil), or None
            (hard-label models): the middle panel then shows the mask as 0/1.
    """
    images = np.asarray(images, dtype=np.float64)
    masks = np.asarray(masks)
    if probabilities is None:
        probabilities = (masks > 0).astype(np.float64)
    batch, height, width = images.shape
    columns = max(1, min(columns, batch))
    rows = int(np.ceil(batch / columns))
    cell_w = 3 * width + 2 * pad
    canvas = np.full((rows * (height + pad) + pad, columns * (cell_w + 3 * pad) + pad, 3), 255, dtype=np.uint8)
    for index in range(batch):
        row, column = divmod(index, columns)
        top = pad + row * (height + pad)
        left = pad + column * (cell_w + 3 * pad)
        grey = (np.clip(images[index], 0, 1) * 255).round().astype(np.uint8)
        panels = [
            np.repeat(grey[..., None], 3, axis=-1),
            _heat(probabilities[index]),
            PALETTE[masks[index] % len(PALETTE)],
        ]
        for k, panel in enumerate(panels):
            x = left + k * (width + pad)
            canvas[top : top + height, x : x + width] = panel
    return Image.fromarray(canvas)


def softmax_probability(soft_labels: np.ndarray, class_index: int) -> np.ndarray:
    """(B, C, H, W) logits -> (B, H, W) probability of one class."""
    logits = np.asarray(soft_labels, dtype=np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp[:, class_index] / exp.sum(axis=1)


def generated_samples_figure(dataset, columns: int = 8) -> Image.Image:
    """Triplet grid of a generated dataset (columns image, soft_label, mask; class names in its features)."""

    images = np.stack([np.asarray(image, dtype=np.float64) / 255 for image in dataset["image"]])
    masks = np.stack([np.asarray(mask) for mask in dataset["mask"]])
    probabilities = None
    if "soft_label" in dataset.column_names:
        soft = np.stack([np.asarray(s, dtype=np.float32) for s in dataset.with_format("numpy")["soft_label"]])
        probabilities = softmax_probability(soft, oil_class_index(class_names_of(dataset)))
    return triplet_grid(images, masks, probabilities, columns=columns)
