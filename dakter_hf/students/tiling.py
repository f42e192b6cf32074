"""Overlapping-window inference for SAR scenes of any size.

A segmentation network is trained on fixed-size crops, while real scenes are
thousands of pixels wide. `predict_tiled` cuts the scene into overlapping
windows, runs a model-agnostic `predict` callable on batches of them and blends
the per-pixel class probabilities with a weight that favours window centres,
where the network sees the most context, so the stitched map has no seams.

`predict(windows)` maps a float batch (N, C_in, h, w) to class probabilities
(N, K, h, w) at the same size; resizing and softmax are the caller's business,
which keeps this module usable by both `dakter segment` and the Gradio Space.
Everything stays on the device of the input image.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dakter_hf.data.raster import check_pixels


Predict = Callable[[torch.Tensor], torch.Tensor]
Weights = Union[str, torch.Tensor]

#: Floor of the Hann blend weight (its maximum is 1). Small enough that a
#: window's unreliable border barely counts wherever another window covers the
#: pixel better, large enough to stay far from float32 underflow.
HANN_EPS = 1e-3


@dataclass
class TilingPlan:
    """Where the windows go: top-left (y, x) origins of `window` x `window` squares.

    For an image smaller than the window in a dimension the single origin there
    is 0 and the image is padded up to `padded_height` / `padded_width`.
    """

    height: int
    width: int
    window: int
    stride: int
    origins: List[Tuple[int, int]] = field(default_factory=list)

    @property
    def padded_height(self) -> int:
        return max(self.height, self.window)

    @property
    def padded_width(self) -> int:
        return max(self.width, self.window)


def _starts(size: int, window: int, stride: int) -> List[int]:
    """1-D origins: a regular grid, plus one last window flush with the far border."""
    if size <= window:
        return [0]
    return sorted(set(range(0, size - window, stride)) | {size - window})


def plan_tiles(
    height: int, width: int, window: int, overlap: float = 0.25, stride: Optional[int] = None
) -> TilingPlan:
    """Origins covering every pixel, all windows inside the (padded) image.

    stride defaults to window - round(overlap * window); an explicit `stride`
    overrides `overlap`. The last row / column is shifted back to end exactly
    at the border, so no padding is needed once the image is at least the window.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if window < 1:
        raise ValueError(f"window must be a positive integer, got {window}")
    if stride is None:
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        stride = max(1, window - round(overlap * window))
    elif not 1 <= stride <= window:
        # a stride above the window would leave uncovered gaps
        raise ValueError(f"stride must be in [1, window={window}], got {stride}")
    ys, xs = _starts(height, window, stride), _starts(width, window, stride)
    return TilingPlan(height, width, window, stride, list(itertools.product(ys, xs)))


def blend_weights(window: int, kind: str = "hann", device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """(window, window) float32 blend weight, 1 at the centre for "hann".

    "hann" is the outer product of two symmetric Hann windows, floored at
    HANN_EPS: window borders, where zero padding makes the network least
    reliable, count for almost nothing next to an overlapping window's centre.
    The floor keeps the weight strictly positive, because pixels at the image
    border (and corners) may be covered only by a window edge and would
    otherwise be left with 0 / 0. "uniform" is plain averaging.
    """
    if kind == "uniform":
        return torch.ones(window, window, device=device)
    if kind != "hann":
        raise ValueError(f"weights kind must be 'hann' or 'uniform', got {kind!r}")
    h = torch.hann_window(window, periodic=False, dtype=torch.float32, device=device)
    h = 0.5 * (h + h.flip(0))  # exactly symmetric, so no direction is favoured
    return torch.outer(h, h).clamp_min(HANN_EPS)


def _weight_tensor(weights: Weights, window: int, device: torch.device) -> torch.Tensor:
    if isinstance(weights, str):
        return blend_weights(window, weights, device=device)
    if weights.shape != (window, window):
        raise ValueError(f"weights must be ({window}, {window}), got {tuple(weights.shape)}")
    if not bool((weights > 0).all()):
        raise ValueError("weights must be strictly positive (border pixels may be covered by one window edge only)")
    return weights.to(device=device, dtype=torch.float32)


def _weight_sum(plan: TilingPlan, w: torch.Tensor) -> torch.Tensor:
    """Total weight over the padded extent."""
    total = torch.zeros(plan.padded_height, plan.padded_width, dtype=torch.float32, device=w.device)
    n = plan.window
    for y, x in plan.origins:
        total[y : y + n, x : x + n] += w
    return total


def stitch_weights_map(plan: TilingPlan, weights: Weights = "hann") -> torch.Tensor:
    """(height, width) sum of the blend weights of all windows: the normaliser of `predict_tiled`."""
    device = weights.device if isinstance(weights, torch.Tensor) else None
    w = _weight_tensor(weights, plan.window, torch.device(device or "cpu"))
    return _weight_sum(plan, w)[: plan.height, : plan.width]


def _pad_dim(image: torch.Tensor, dim: int, target: int) -> torch.Tensor:
    """Pad the bottom / right of one spatial dim to `target`: reflect if possible, else zeros."""
    size = image.shape[dim]
    if size >= target:
        return image
    amount = target - size
    pad = (0, 0, 0, amount) if dim == -2 else (0, amount, 0, 0)
    batch = image[None]
    # reflect needs amount < size; it keeps SAR texture statistics, unlike a flat border
    if amount < size:
        return F.pad(batch, pad, mode="reflect")[0]
    return F.pad(batch, pad, mode="constant", value=0.0)[0]


def _batches(origins: List[Tuple[int, int]], batch_size: int) -> Iterator[List[Tuple[int, int]]]:
    for start in range(0, len(origins), batch_size):
        yield origins[start : start + batch_size]


def _check_output(out: torch.Tensor, n: int, window: int) -> None:
    if out.ndim != 4 or out.shape[0] != n or tuple(out.shape[-2:]) != (window, window):
        raise ValueError(f"predict must return (N={n}, K, {window}, {window}) probabilities, got {tuple(out.shape)}")


def _as_float(image: torch.Tensor) -> torch.Tensor:
    return image if image.is_floating_point() else image.float()


def predict_tiled(
    image: torch.Tensor,
    predict: Predict,
    window: int,
    overlap: float = 0.25,
    batch_size: int = 8,
    weights: Weights = "hann",
    progress: bool = False,
    max_pixels: Optional[int] = None,
) -> torch.Tensor:
    """(K, H, W) float32 blended class probabilities of a (C_in, H, W) image.

    Weighted probabilities and weights are summed in float32 buffers (memory
    O(K*H*W), independent of the window count) and divided once at the end, so
    per-pixel predictions come back exactly and probabilities still sum to 1.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {tuple(image.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    height, width = image.shape[-2:]
    check_pixels(height, width, max_pixels)  # refused before any memory is allocated
    plan = plan_tiles(height, width, window, overlap=overlap)
    device = image.device
    w = _weight_tensor(weights, window, device)
    padded = _pad_dim(_pad_dim(_as_float(image), -2, window), -1, window)

    total = -(-len(plan.origins) // batch_size)
    acc: Optional[torch.Tensor] = None
    with torch.no_grad():
        for batch in tqdm(_batches(plan.origins, batch_size), total=total, disable=not progress, desc="tiles"):
            windows = torch.stack([padded[:, y : y + window, x : x + window] for y, x in batch])
            out = predict(windows)
            _check_output(out, len(batch), window)
            out = out.to(device=device, dtype=torch.float32) * w
            if acc is None:
                acc = torch.zeros(
                    out.shape[1], plan.padded_height, plan.padded_width, dtype=torch.float32, device=device
                )
            for (y, x), prob in zip(batch, out):
                acc[:, y : y + window, x : x + window] += prob
        acc /= _weight_sum(plan, w)
    return acc[:, :height, :width].contiguous()


def predict_whole(image: torch.Tensor, predict: Predict) -> torch.Tensor:
    """(K, H, W) float32 probabilities from one forward pass on the whole image (the reference for tiling)."""
    with torch.no_grad():
        return predict(_as_float(image)[None])[0].to(device=image.device, dtype=torch.float32)
