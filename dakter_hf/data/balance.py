"""SNR-based balancing factor b (paper Sec. 3.3.1, Supplement C).

b = sqrt(P(x0) / P(y0)), where P is the mean power of the 2-D DFT (Eq. 9),
averaged over the training images. x0 is the grey image in [-1, 1], y0 the
one-hot mask mapped to {-1, 1}. The label channels are multiplied by b before
noising so that both modalities lose information at the same rate.

This module is the only place that computes b; training, the CLI and the tests
all call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional, Tuple, Union

import numpy as np
from tqdm.auto import tqdm

from dakter_hf.data.arrays import image_to_unit_range, iter_image_mask_pairs, mask_to_ids, resize_pair
from dakter_hf.data.features import class_names_of
from dakter_hf.pipelines.pipeline_dakter import label_codebook


if TYPE_CHECKING:
    import datasets


def mean_power(x: np.ndarray) -> float:
    """Mean over frequencies of |DFT(x)|^2 (Eq. 9) for a 2-D array.

    For a stack (..., H, W) the power is averaged over the leading axes as well,
    so a C-channel one-hot mask gives the mean per-channel power.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"mean_power expects an array with at least 2 dimensions (H, W), got shape {x.shape}")
    spectrum = np.fft.fft2(x, axes=(-2, -1))
    return float(np.mean((spectrum * np.conj(spectrum)).real))


def normalized_one_hot(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Class-id mask (H, W) -> one-hot in {-1, 1}, shape (C, H, W) (Algorithm 1, line 1).

    The codes come from the pipeline's label codec (`label_codebook(C, "onehot")`),
    the one definition shared with training and sampling. Ids must lie in 0..C-1.
    """
    # imported here: the pipeline module pulls in diffusers, which `import dakter_hf` avoids

    ids = np.asarray(mask).astype(np.int64, copy=False)
    codebook = label_codebook(num_classes, "onehot").numpy().astype(np.float64)
    return np.ascontiguousarray(np.moveaxis(codebook[ids], -1, 0))


@dataclass
class BalanceStats:
    """Result of :func:`compute_balance_stats`."""

    b: float
    power_image: float
    power_label: float
    num_images: int
    resolution: Optional[int]  # None = native size

    def __float__(self) -> float:
        return self.b


Pair = Tuple[object, object]


def compute_balance_stats(
    data: Union["datasets.Dataset", Iterable[Pair]],
    num_classes: Optional[int] = None,
    resolution: Optional[int] = None,
    image_key: str = "image",
    mask_key: str = "mask",
    show_progress: bool = False,
) -> BalanceStats:
    """Stream over (image, mask) pairs once, in constant memory, and compute b.

    Args:
        data: a `datasets.Dataset` with `image`/`mask` columns, or an iterable of
            `(image, mask)` pairs / dicts. Images are PIL images or uint8 arrays
            (0..255, grey); masks hold class ids.
        num_classes: C. Read from the dataset features when not given.
        resolution: resize to `resolution x resolution` first (bilinear image,
            nearest mask), as training does. None keeps the native size.
    """
    if num_classes is None:
        if not hasattr(data, "features"):
            raise ValueError("num_classes is required when data is not a datasets.Dataset with class names")
        num_classes = len(class_names_of(data))
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")

    total_image = 0.0
    total_label = 0.0
    count = 0
    total = len(data) if hasattr(data, "__len__") else None
    for image, mask in tqdm(
        iter_image_mask_pairs(data, image_key, mask_key),
        total=total,
        disable=not show_progress,
        desc="balancing factor",
    ):
        image, mask = resize_pair(image, mask, resolution)
        x0 = image_to_unit_range(image)
        ids = mask_to_ids(mask)
        if ids.shape != x0.shape:
            raise ValueError(f"image {count} has shape {x0.shape} but its mask has shape {ids.shape}")
        if ids.max(initial=0) >= num_classes:
            raise ValueError(f"mask {count} holds class id {int(ids.max())}, but num_classes is {num_classes}")
        total_image += mean_power(x0)
        total_label += mean_power(normalized_one_hot(ids, num_classes))
        count += 1
    if count == 0:
        raise ValueError("cannot compute the balancing factor of an empty dataset (0 images)")
    power_image = total_image / count
    power_label = total_label / count
    return BalanceStats(
        b=float(np.sqrt(power_image / power_label)),
        power_image=power_image,
        power_label=power_label,
        num_images=count,
        resolution=resolution,
    )


def balancing_factor(data, num_classes: Optional[int] = None, resolution: Optional[int] = None, **kwargs) -> float:
    """b = sqrt(P(x0) / P(y0)) over a dataset; see :func:`compute_balance_stats`."""
    return compute_balance_stats(data, num_classes=num_classes, resolution=resolution, **kwargs).b
