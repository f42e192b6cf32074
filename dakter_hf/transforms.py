"""Turn dataset rows into training tensors, with augmentations shared by image and mask."""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch

from .data.arrays import image_to_unit_range, mask_to_ids, resize_pair


def pair_to_tensors(image, mask, resolution: Optional[int]) -> Dict[str, torch.Tensor]:
    """PIL/array pair -> {"images": (1, R, R) float in [-1, 1], "masks": (R, R) int64}."""
    image, mask = resize_pair(image, mask, resolution)
    x0 = torch.from_numpy(image_to_unit_range(image).astype(np.float32))[None]
    ids = torch.from_numpy(mask_to_ids(mask))
    return {"images": x0, "masks": ids}


def random_dihedral(images: torch.Tensor, masks: torch.Tensor, generator: Optional[torch.Generator] = None):
    """The same random flip / rot90 for image (..., H, W) and mask (..., H, W).

    SAR scenes have no preferred orientation, so the 8 dihedral transforms are all valid.
    """
    k = int(torch.randint(0, 4, (1,), generator=generator))
    flip = bool(torch.randint(0, 2, (1,), generator=generator))
    if flip:
        images, masks = images.flip(-1), masks.flip(-1)
    if k:
        images, masks = torch.rot90(images, k, dims=(-2, -1)), torch.rot90(masks, k, dims=(-2, -1))
    return images, masks


def collate_pairs(rows: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    return {
        "images": torch.stack([row["images"] for row in rows]),
        "masks": torch.stack([row["masks"] for row in rows]),
    }
