"""Label scarcity: the seeded, stratified subsets of the real training split (`real_fractions`).

    indices = scarcity_subset(has_oil, fraction=0.1, seed=0)

One function picks every subset, so the rule is in one place:

- **stratified** by whether an image holds any non-background pixel ("oil"): the subset's
  share of such images is within half an image of the full split's (`round(k * n_oil / n)`
  of its `k = round(fraction * n)` images hold oil);
- **seeded**: one permutation of each stratum per seed (numpy's PCG64), the same seed gives
  the same subset and another seed another one;
- **nested**: for one seed, a smaller fraction's subset lies inside a larger one's (each
  fraction takes the first images of the same permutations), so a curve over fractions
  adds labelled images instead of drawing new ones.

The experiment runner writes each subset as a saved dataset (train = the subset, test = the
full test split) that every step of that fraction reads: its balance step, joint model,
generated sets, quality and every student of every arm.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from dakter_hf.data.features import class_names_of


def subset_size(count: int, fraction: float) -> int:
    """The number of images of a `fraction` subset of `count`: round(fraction * count), at least 1."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a real fraction must be in (0, 1], got {fraction}")
    return min(count, max(1, int(round(fraction * count))))


def scarcity_subset(has_oil: Sequence[bool], fraction: float, seed: int) -> List[int]:
    """Sorted row indices of the seeded subset holding `fraction` of the rows, stratified by `has_oil`."""
    flags = np.asarray(has_oil, dtype=bool)
    count = len(flags)
    if count == 0:
        raise ValueError("cannot take a subset of an empty training split")
    size = subset_size(count, fraction)
    oil, clean = np.flatnonzero(flags), np.flatnonzero(~flags)
    # round(k * n_oil / n) <= n_oil and k - that <= n_clean: both strata always hold enough rows
    with_oil = int(round(size * len(oil) / count))
    rng = np.random.default_rng(seed)
    oil, clean = rng.permutation(oil), rng.permutation(clean)  # one draw per stratum: nested over fractions
    return sorted(int(i) for i in np.concatenate([oil[:with_oil], clean[: size - with_oil]]))


def background_index(class_names: Sequence[str]) -> int:
    """The class that is no finding: the one named "background", else class 0 (the datasets' convention)."""
    lowered = [name.lower() for name in class_names]
    return lowered.index("background") if "background" in lowered else 0


def images_with_oil(split) -> List[bool]:
    """Per row of a dakter split: does its mask hold any non-background pixel (read from its `classes` column)."""
    background = background_index(class_names_of(split))
    return [any(int(c) != background for c in present) for present in split["classes"]]


def subset_summary(has_oil: Sequence[bool], indices: Sequence[int]) -> Dict[str, float]:
    """Counts and oil shares of the full split and of the subset (what the report and the tests read)."""
    flags = np.asarray(has_oil, dtype=bool)
    chosen = flags[np.asarray(indices, dtype=np.int64)] if len(indices) else flags[:0]
    return {
        "num_images": int(len(chosen)),
        "num_with_oil": int(chosen.sum()),
        "oil_share": float(chosen.mean()) if len(chosen) else 0.0,
        "full_num_images": int(len(flags)),
        "full_num_with_oil": int(flags.sum()),
        "full_oil_share": float(flags.mean()) if len(flags) else 0.0,
    }
