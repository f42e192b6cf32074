"""Synthetic labelled SAR scenes for offline tests and demos (NOT real data).

Every scene is drawn from a simple physical picture of C-band sea clutter:

* Sea surface: normalised backscatter (intensity) falling smoothly across the
  swath (incidence-angle gradient in a random direction) times a mild, smooth
  wind-variability field.
* Oil slicks (class 1): elongated shapes (thin rotated ellipses bent into a
  meandering band) with *sharp* edges, where the capillary waves are damped and
  the backscatter drops to a factor 0.2-0.35 of the sea around them.
* Look-alikes (class 2, 5-class scenes only): low-wind areas / biogenic films,
  broad patches with *blurred* contours: a Gaussian-blurred damping field; the
  label marks where the damping is strong (field above half its peak).
* Ships (class 3): a few pixels, 15-40 times brighter than the sea.
* Land (class 4): a region along one image side with a noisy coast line, bright
  and textured.

Speckle is multiplicative: intensity = backscatter * S with S ~ Gamma(shape=L,
scale=1/L) (mean 1, L looks, intensity coefficient of variation 1/sqrt(L)).
The image is stored as **amplitude**, sqrt(intensity), with one fixed gain for
every scene (mean sea amplitude ~ 70 grey levels, saturating at 255), i.e.
linear in amplitude, not in dB, and without per-scene normalisation, so dark
slicks stay dark and intensity = (pixel / 255)**2 / gain**2 keeps the
Gamma statistics.

Scene i depends only on (seed, i): it is drawn from
`numpy.random.default_rng([seed, i])` (train) or `default_rng([seed, i, 1])`
(test), so scene i is the same whatever `num_samples` is, and test scenes never
repeat training scenes. Every scene holds at least one oil slick. In 5-class
scenes look-alikes and ships are always drawn in even-numbered scenes and land in
odd-numbered ones (besides random extra draws), so any two consecutive scenes
together show all five classes.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import datasets
import numpy as np
from scipy import ndimage

from dakter_hf.data.build import build_split
from dakter_hf.data.features import OSD_CLASSES, SOS_CLASSES


SEA, OIL, LOOK_ALIKE, SHIP, LAND = 0, 1, 2, 3, 4

# amplitude gain: mean sea intensity 1.0 maps to this many grey levels (amplitude)
SEA_GREY_LEVEL = 70.0
OIL_DAMPING = (0.2, 0.35)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    std = field.std()
    return field / std if std > 0 else field


def _sea_backscatter(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Mean-1 sea intensity: incidence-angle gradient times smooth wind variability."""
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx + np.sin(angle) * yy) / size  # about -0.7 .. 0.7
    gradient = np.exp(-rng.uniform(0.3, 0.9) * ramp)
    wind = np.exp(0.12 * _smooth_noise(rng, size, sigma=size / 6))
    sea = gradient * wind
    return sea / sea.mean()


def _slick(rng: np.random.Generator, size: int, yy, xx, allowed: np.ndarray) -> np.ndarray:
    """Boolean mask of one elongated, meandering slick with sharp edges, centred on an allowed pixel."""
    candidates = np.flatnonzero(allowed)
    centre = candidates[rng.integers(len(candidates))] if len(candidates) else rng.integers(size * size)
    cy, cx = divmod(int(centre), size)
    theta = rng.uniform(0, np.pi)
    half_length = rng.uniform(0.15, 0.45) * size
    half_width = rng.uniform(1.2, max(1.5, 0.06 * size))
    amplitude = rng.uniform(0, 0.12) * size
    wavelength = rng.uniform(0.5, 1.5) * size
    phase = rng.uniform(0, 2 * np.pi)
    u = np.cos(theta) * (xx - cx) + np.sin(theta) * (yy - cy)
    v = -np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy)
    centre_line = amplitude * (np.sin(2 * np.pi * u / wavelength + phase) - np.sin(phase))
    # a thin ellipse bent along the meandering centre line
    mask = (u / half_length) ** 2 + ((v - centre_line) / half_width) ** 2 <= 1.0
    mask[cy, cx] = True
    return mask


def _land(rng: np.random.Generator, size: int) -> np.ndarray:
    """Boolean land mask: a region along one side with a noisy coast line."""
    depth = rng.uniform(0.12, 0.3) * size
    coast = depth + np.cumsum(rng.normal(0, 0.06 * size**0.5, size))
    coast = ndimage.gaussian_filter1d(coast - coast.mean() + depth, sigma=1.5)
    coast = np.clip(coast, 2, 0.4 * size)
    across = np.arange(size)[:, None]  # distance from the side, along axis 0
    mask = across < coast[None, :]
    side = int(rng.integers(4))
    return np.rot90(mask, side).copy()


def _scene(rng: np.random.Generator, size: int, num_classes: int, looks: float, index: int):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    backscatter = _sea_backscatter(rng, size, yy, xx)
    labels = np.zeros((size, size), dtype=np.uint8)

    land = np.zeros((size, size), dtype=bool)
    if num_classes == 5:
        with_look_alike = index % 2 == 0 or rng.random() < 0.4
        with_ship = index % 2 == 0 or rng.random() < 0.4
        with_land = index % 2 == 1 or rng.random() < 0.25
        if with_land:
            land = _land(rng, size)
        sea = ~land
        if with_look_alike:
            damping = np.zeros((size, size))
            for _ in range(int(rng.integers(1, 3))):
                candidates = np.flatnonzero(sea)
                cy, cx = divmod(int(candidates[rng.integers(len(candidates))]), size)
                radius_u, radius_v = rng.uniform(0.08, 0.22, size=2) * size
                theta = rng.uniform(0, np.pi)
                u = np.cos(theta) * (xx - cx) + np.sin(theta) * (yy - cy)
                v = -np.sin(theta) * (xx - cx) + np.cos(theta) * (yy - cy)
                damping[(u / radius_u) ** 2 + (v / radius_v) ** 2 <= 1.0] = 1.0
            damping = ndimage.gaussian_filter(damping, sigma=rng.uniform(2.0, 4.0) * size / 64)
            damping *= sea
            if damping.max() > 0:
                damping /= damping.max()
                backscatter *= 1.0 - rng.uniform(0.55, 0.75) * damping
                labels[damping > 0.5] = LOOK_ALIKE
    else:
        with_ship = False
        sea = np.ones((size, size), dtype=bool)

    for _ in range(int(rng.integers(1, 4))):
        slick = _slick(rng, size, yy, xx, sea) & sea
        backscatter[slick] *= rng.uniform(*OIL_DAMPING)
        labels[slick] = OIL

    if with_ship:
        for _ in range(int(rng.integers(1, 4))):
            candidates = np.flatnonzero(sea)
            cy, cx = divmod(int(candidates[rng.integers(len(candidates))]), size)
            h, w = (int(v) for v in rng.integers(1, 4, size=2))
            if rng.random() < 0.5:
                h, w = w, h
            ship = np.zeros((size, size), dtype=bool)
            ship[cy : cy + h, cx : cx + w] = True
            ship &= sea
            ship[cy, cx] = True
            backscatter[ship] = rng.uniform(15, 40)
            labels[ship] = SHIP

    if land.any():
        texture = np.exp(0.5 * _smooth_noise(rng, size, sigma=1.5))
        backscatter[land] = rng.uniform(2.5, 5.0) * texture[land]
        labels[land] = LAND

    speckle = rng.gamma(shape=looks, scale=1.0 / looks, size=(size, size))
    amplitude = np.sqrt(backscatter * speckle) * SEA_GREY_LEVEL
    image = np.clip(np.rint(amplitude), 0, 255).astype(np.uint8)
    return image, labels


def simulate_scene(seed: int, index: int, num_classes: int = 2, size: int = 64, looks: float = 4, test: bool = False):
    """One synthetic scene (image uint8 (size, size), mask uint8 class ids), a pure function of its arguments."""
    _check(num_classes, size, looks)
    entropy = [int(seed), int(index), 1] if test else [int(seed), int(index)]
    return _scene(np.random.default_rng(entropy), int(size), int(num_classes), float(looks), int(index))


def _check(num_classes: int, size: int, looks: float) -> List[str]:
    if num_classes == 2:
        names = SOS_CLASSES
    elif num_classes == 5:
        names = OSD_CLASSES
    else:
        raise ValueError(f"num_classes must be 2 (SOS classes) or 5 (OSD classes), got {num_classes!r}")
    if int(size) < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size!r}")
    if not float(looks) >= 1.0:
        raise ValueError(f"looks must be >= 1, got {looks!r}")
    return list(names)


def simulate_sar(
    num_samples: int,
    num_classes: int = 2,
    size: int = 64,
    seed: int = 0,
    looks: float = 4,
    num_test_samples: int = 0,
) -> datasets.DatasetDict:
    """Synthetic labelled SAR scenes as a DatasetDict ("train", plus "test" if num_test_samples > 0).

    Args:
        num_samples: number of training scenes.
        num_classes: 2 (background, oil: the SOS classes) or 5 (the OSD classes).
        size: side of the square scenes in pixels.
        seed: scene i is drawn from default_rng([seed, i]) (test: [seed, i, 1]).
        looks: number of looks L of the Gamma speckle (higher = smoother).
        num_test_samples: number of test scenes (0 for none).
    """
    class_names = _check(num_classes, size, looks)
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples!r}")
    if int(num_test_samples) < 0:
        raise ValueError(f"num_test_samples must be >= 0, got {num_test_samples!r}")
    splits: Dict[str, Tuple[int, bool]] = {"train": (int(num_samples), False)}
    if int(num_test_samples) > 0:
        splits["test"] = (int(num_test_samples), True)

    result = {}
    for name, (count, test) in splits.items():
        prefix = f"sim{seed}_test_" if test else f"sim{seed}_"

        def records(count=count, test=test, prefix=prefix):
            for i in range(count):
                image, mask = simulate_scene(seed, i, num_classes, size, looks, test=test)
                yield {"image": image, "mask": mask, "id": f"{prefix}{i:06d}", "source": "simulated"}

        result[name] = build_split(
            records,
            class_names,
            ["simulated", name, int(seed), count, int(num_classes), int(size), float(looks)],
            description=f"simulated/{name}",
            expected_count=count,
        )
    return datasets.DatasetDict(result)
