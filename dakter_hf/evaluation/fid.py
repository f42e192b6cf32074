"""FID and sFID of generated vs real images, with kept implementations.

The Fréchet distance is torchmetrics' ``FrechetInceptionDistance``; the network
is torch-fidelity's port of the TF-FID InceptionV3 (TF1-exact bilinear resize to
299 px inside it), so the numbers are comparable with published FIDs. One
Inception pass per batch gives both feature sets:

* FID: ``pool_3`` (2048 dims);
* sFID (Nash et al. 2021, guided-diffusion's evaluator): TF tensor
  ``mixed_6/conv:0``, i.e. the ReLU output of ``Mixed_6d.branch1x1`` in
  torch-fidelity's naming (its weight converter maps ``mixed_6/conv`` there),
  first 7 of 192 channels of the 17x17 map, flattened in TF's NHWC order
  (7*17*17 = 2023 dims). Exact up to the float differences of the port.

Grey SAR images are repeated to 3 channels. Inception was trained on RGB
photographs: FID/sFID rank generators but are no SAR realism measure (see
:mod:`dakter_hf.evaluation.statistics`). Nothing is downloaded: the weights are a local file.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Iterator, Optional

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dakter_hf.data.arrays import is_dataset, to_grey_array


__all__ = ["InceptionWeightsMissing", "find_inception_weights", "TFInceptionFeatures", "frechet_distances"]

WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
# torch-fidelity's cached name first; pytorch-fid's conversion of the same TF graph has the same state-dict keys
WEIGHTS_NAMES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
MIN_IMAGES = 2048  # below this FID is clearly biased upward (the bias shrinks like 1/N)
SFID_CHANNELS = 7


class InceptionWeightsMissing(FileNotFoundError):
    """The InceptionV3 FID weights are not on this machine (they are never downloaded here)."""


def find_inception_weights(path: Optional[str] = None) -> str:
    """Local path of the InceptionV3 FID weights: `path`, else torch hub's cache (where torch-fidelity keeps them)."""
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    candidates = [os.path.expanduser(path)] if path else [os.path.join(cache, name) for name in WEIGHTS_NAMES]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise InceptionWeightsMissing(
        f"InceptionV3 FID weights not found at {' or '.join(candidates)}. Nothing is downloaded at run time; "
        f"get the file once with:\n  mkdir -p {cache} && curl -L -o {os.path.join(cache, WEIGHTS_NAMES[0])} "
        f"{WEIGHTS_URL}\n"
        f"or pass weights=PATH to a copy of it (pytorch-fid's {WEIGHTS_NAMES[1]} also works)."
    )


def _inception_class():
    """torch-fidelity's InceptionV3, imported only when it is needed."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as error:  # also a torchvision that does not match torch: torch-fidelity imports it
        raise ImportError(
            f"FID/sFID with Inception need torch-fidelity and a torchvision built for your torch "
            f"(`pip install torch-fidelity`); importing it failed: {error}. Pass feature= to use another network."
        ) from error
    return FeatureExtractorInceptionV3


class TFInceptionFeatures(nn.Module):
    """uint8 images (N, 3, H, W) -> {"fid": (N, 2048), "sfid": (N, 2023)} in one Inception pass."""

    def __init__(self, weights: str):
        super().__init__()
        self.inception = _inception_class()("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights)
        self.inception.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)
        self._spatial = None

    def _keep_spatial(self, module, inputs, output):
        """Keep TF's mixed_6/conv[..., :7] as NHWC-flattened rows."""
        self._spatial = output[:, :SFID_CHANNELS].permute(0, 2, 3, 1).reshape(output.shape[0], -1)

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        (pool,) = self.inception(images)
        return {"fid": pool, "sfid": self._spatial}


class _FeatureRows(nn.Module):
    """Identity "network" for torchmetrics: it is fed feature rows, so each image is embedded once for both metrics."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return rows


def _frechet_metric(num_features: int):
    """torchmetrics' Fréchet distance over `num_features`-dim rows."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as error:
        raise ImportError(
            f"torchmetrics.image.fid failed to import ({error}); `pip install torchmetrics`. If torch-fidelity is "
            "installed without a working torchvision, torchmetrics tries it and fails: fix torchvision or uninstall "
            "torch-fidelity."
        ) from error
    return FrechetInceptionDistance(feature=_FeatureRows(num_features))


def _grey_to_rgb(batch: list) -> torch.Tensor:
    """Same-size grey uint8 images -> (B, 3, H, W): Inception takes RGB, SAR has one channel."""
    return torch.from_numpy(np.stack(batch))[:, None].expand(-1, 3, -1, -1).contiguous()


def _rgb_batches(images: Iterable, batch_size: int) -> Iterator[torch.Tensor]:
    """Grey images (0..255) -> uint8 (B, 3, H, W) batches; a new batch starts where the image size changes."""
    batch = []
    for image in images:
        grey = to_grey_array(image)
        if grey.dtype != np.uint8:
            grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        if batch and (len(batch) == batch_size or batch[0].shape != grey.shape):
            yield _grey_to_rgb(batch)
            batch = []
        batch.append(grey)
    if batch:
        yield _grey_to_rgb(batch)


def _notes(num_real: int, num_generated: int, dims: Dict[str, int], inception: bool) -> list:
    """Warnings that belong next to the numbers."""
    n = min(num_real, num_generated)
    notes = []
    if n < MIN_IMAGES:
        notes.append(
            f"FID from {n} images is biased upward (the bias shrinks like 1/N); use >= {MIN_IMAGES} "
            "(papers use 10k-50k) and compare only scores computed with the same N."
        )
    notes += [
        f"{key} uses {d}-dim features: with {n} images its covariances are singular."
        for key, d in dims.items()
        if n <= d
    ]
    if inception:
        notes.append(
            "Inception was trained on RGB photographs: FID/sFID rank generators but do not measure SAR realism."
        )
    return notes


def _extractor(feature, spatial_feature, weights, device):
    """(images -> {"fid": rows[, "sfid": rows]}, its name): the given modules, or one Inception pass for both."""
    if feature is None:
        return TFInceptionFeatures(find_inception_weights(weights)).to(
            device
        ).eval(), "InceptionV3 (torch-fidelity, TF FID weights)"
    modules = {"fid": feature.to(device)}
    if spatial_feature is not None:
        modules["sfid"] = spatial_feature.to(device)
    return (lambda batch: {key: module(batch) for key, module in modules.items()}), type(feature).__name__


def frechet_distances(
    real_images,
    generated_images,
    weights: Optional[str] = None,
    batch_size: int = 32,
    device=None,
    feature: Optional[nn.Module] = None,
    spatial_feature: Optional[nn.Module] = None,
    show_progress: bool = True,
) -> dict:
    """FID (and sFID) of generated vs real grey images (PIL, uint8 (H, W) arrays, or a dataset with an "image" column).

    Without `feature` the TF-FID InceptionV3 gives both (weights: see
    :func:`find_inception_weights`); with `feature` (and optionally
    `spatial_feature`), modules mapping uint8 (N, 3, H, W) to (N, D) rows are used.
    """

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    embed, name = _extractor(feature, spatial_feature, weights, device)
    metrics, counts = {}, {True: 0, False: 0}
    with torch.no_grad():
        for real, images in ((True, real_images), (False, generated_images)):
            images = images["image"] if is_dataset(images) else images
            desc = f"Fréchet features ({'real' if real else 'generated'})"
            for batch in tqdm(_rgb_batches(images, batch_size), desc=desc, disable=not show_progress):
                for key, rows in embed(batch.to(device)).items():
                    if key not in metrics:
                        metrics[key] = _frechet_metric(rows.shape[1]).to(device)
                    metrics[key].update(rows.double(), real=real)
                counts[real] += len(batch)
    if min(counts.values()) < 2:
        raise ValueError(
            f"Fréchet distances need >= 2 images per set, got {counts[True]} real and {counts[False]} generated"
        )
    values = {key: float(metric.compute()) for key, metric in metrics.items()}
    dims = {key: metric.inception.num_features for key, metric in metrics.items()}
    return {
        "fid": values["fid"],
        "sfid": values.get("sfid"),
        "num_real": counts[True],
        "num_generated": counts[False],
        "feature_extractor": name,
        "notes": _notes(counts[True], counts[False], dims, inception=feature is None),
    }
