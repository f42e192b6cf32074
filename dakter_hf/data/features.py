"""The feature schema every dakter dataset shares, and where class names live.

Class names travel inside the features: the `classes` column is a sequence of
`ClassLabel(names=...)` listing the class ids present in each mask. Because
features survive `save_to_disk` and parquet alike, any later step recovers C and
id2label from the data alone with :func:`class_names_of`.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import datasets
import numpy as np


SOS_CLASSES = ["background", "oil"]
OSD_CLASSES = ["sea_surface", "oil_spill", "look_alike", "ship", "land"]


def segmentation_features(class_names: Sequence[str]) -> datasets.Features:
    """Features of a real (or simulated) segmentation dataset."""
    _check_class_names(class_names)
    return datasets.Features(
        {
            "image": datasets.Image(),  # grey (mode L)
            "mask": datasets.Image(),  # grey (mode L), pixel value = class id
            "id": datasets.Value("string"),
            "source": datasets.Value("string"),
            "classes": datasets.List(datasets.ClassLabel(names=list(class_names))),
        }
    )


def _check_class_names(class_names: Sequence[str]) -> None:
    if len(class_names) < 2:
        raise ValueError(f"a segmentation dataset needs at least 2 classes, got {list(class_names)}")
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class names must be unique, got {list(class_names)}")
    if len(class_names) > 255:
        raise ValueError("at most 255 classes fit in a grey mask image")


def class_names_of(dataset) -> List[str]:
    """Class names recorded in a dakter dataset's features (Dataset or DatasetDict)."""
    if isinstance(dataset, datasets.DatasetDict):
        dataset = next(iter(dataset.values()))
    features = getattr(dataset, "features", None)
    if features is None or "classes" not in features:
        raise ValueError(
            "this dataset does not record its class names: expected a 'classes' column of "
            "List(ClassLabel(names=...)) as written by dakter_hf.data"
        )
    feature = features["classes"]
    inner = getattr(feature, "feature", None)
    if inner is None and isinstance(feature, list):
        inner = feature[0]
    return list(inner.names)


def id2label(dataset) -> Dict[int, str]:
    return dict(enumerate(class_names_of(dataset)))


def classes_present(mask_ids: np.ndarray) -> List[int]:
    """Sorted class ids present in a mask (the `classes` column)."""
    return [int(v) for v in np.unique(mask_ids)]


def oil_class_candidates(class_names: Sequence[str]) -> List[int]:
    """Ids of the classes whose name contains "oil" (case-insensitive), in order."""
    return [i for i, name in enumerate(class_names) if "oil" in name.lower()]


def oil_class_index(class_names: Sequence[str]) -> int:
    """Class id of oil: the first class whose name contains "oil" (case-insensitive).

    "oil" (SOS) -> 1, "oil_spill" (OSD) -> 1. When no name contains "oil", the
    convention of the binary datasets (0 = background, 1 = oil) is assumed and 1
    is returned, provided there are at least 2 classes; otherwise ValueError.
    """
    candidates = oil_class_candidates(class_names)
    if candidates:
        return candidates[0]
    if len(class_names) >= 2:
        return 1
    raise ValueError(
        f"cannot pick an oil class among {list(class_names)}: no name contains 'oil' and fewer than 2 classes"
    )
