"""Turn dataset rows into training tensors, with augmentations shared by image and mask."""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch

from dakter_hf.data.arrays import image_to_unit_range, mask_to_ids, resize_pair


def pair_to_tensors(image, mask, resolution: Optional[int]) -> Dict[str, torch.Tensor]:
    """PIL/array pair -> {"images": (1, R, R) float in [-1, 1], "masks": (R, R) int64}."""
    image, mask = resize_pair(image, mask, resolution)
    x0 = torch.from_numpy(image_to_unit_range(image).astype(np.float32))[None]
    ids = torch.from_numpy(mask_to_ids(mask))
    return {"images": x0, "masks": ids}


def draw_dihedral(generator: Optional[torch.Generator] = None):
    """One of the 8 dihedral transforms: (k quarter turns, flip), drawn in that order."""
    k = int(torch.randint(0, 4, (1,), generator=generator))
    flip = bool(torch.randint(0, 2, (1,), generator=generator))
    return k, flip


def dihedral(tensor: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Flip (last axis) then rotate by k quarter turns over the last two axes."""
    if flip:
        tensor = tensor.flip(-1)
    return torch.rot90(tensor, k, dims=(-2, -1)) if k else tensor


def random_dihedral(images: torch.Tensor, masks: torch.Tensor, generator: Optional[torch.Generator] = None):
    """The same random flip / rot90 for image (..., H, W) and mask (..., H, W).

    SAR scenes have no preferred orientation, so the 8 dihedral transforms are all valid.
    """
    k, flip = draw_dihedral(generator)
    return dihedral(images, k, flip), dihedral(masks, k, flip)


def collate_pairs(rows: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    return {
        "images": torch.stack([row["images"] for row in rows]),
        "masks": torch.stack([row["masks"] for row in rows]),
    }
