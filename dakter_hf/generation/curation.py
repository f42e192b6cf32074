"""Generated-set curation (`dakter generate --match-real DATA`): keep the samples whose oil fractions match DATA.

    settings = GenerationSettings(num_samples=100, match_real="sos:/data/SOS", over_generate=3)
    generate_dataset("outputs/model/pipeline", "outputs/generated", settings, real_data=real_train)

Every generator measured so far made too little oil (12-15 % of the pixels against 18-20 % real). Curation samples
round(FACTOR x N) candidates with the usual generation (candidate i from seed base_seed + i, sharded,
resumable) into OUT/candidates/, then keeps N of them; the kept rows (their `index` and `seed`
unchanged) are the dataset in OUT/data/ and OUT/hf/, read like any generated set.

The rule (:func:`select_matching`) depends only on the candidates' and the real training images'
per-image oil fractions f (the share of a mask's pixels of the oil class):

1. Strata from the real images: stratum 0 holds the images without oil (f = 0); the images with oil
   are cut at the quantiles k / BINS (k = 1 .. BINS - 1, numpy's linear interpolation) of their f,
   repeated edges merged, stratum j holding edge[j-2] < f <= edge[j-1].
2. Each stratum's target is N x its share of the real images, rounded cumulatively (target j =
   round(N x the real share of strata 0 .. j) - round(N x that of strata 0 .. j - 1)), so the targets sum
   to N and the rounding spreads along the strata.
3. Each stratum keeps its own candidates in index order, up to its target.
4. A stratum with fewer candidates than its target takes, strata in order, the candidates not yet kept
   nearest to the real fractions of that stratum (distance of f to [min, max] of them; ties: the lower
   index). The kept set is in index order.

Only the oil class drives the choice (for OSD's five classes too); OUT/curation.json records the rule, the
strata, the oil fraction and the mean class fractions of candidates, kept set and real set, and the kept
indices and seeds; the dataset card summarises it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import datasets
import numpy as np

from dakter_hf.data.arrays import mask_to_ids
from dakter_hf.data.features import class_names_of, oil_class_index
from dakter_hf.data.sources import load_source, source_path
from dakter_hf.errors import DataError
from dakter_hf.generation.config import GenerationConfig
from dakter_hf.generation.shards import (
    Workers,
    check_or_write_config,
    finalize_generated_dataset,
    generate_shards,
    is_finalized,
    kl_file,
    shard_path,
)
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.utils.files import atomic_path, atomic_write, atomic_write_json
from dakter_hf.utils.ownership import is_generated_card, read_marker, remove_leftovers


BINS = 10  # quantile bins of the real images with oil (step 1 of the rule)
CANDIDATES = "candidates"  # OUT/candidates: the over-generated samples
CURATION_NAME = "curation.json"
FLAG = "--match-real"
RULE = (
    f"strata of the per-image oil fraction from the real training images (no oil; then {BINS} quantile bins of "
    "the images with oil); each stratum keeps N x its real share (rounded cumulatively) of its candidates in index "
    "order; a stratum short of candidates takes the unused candidates nearest to its real fractions"
)


# ----------------------------------------------------------------------------- per-image class fractions
def class_pixel_counts(masks, num_classes: int, name: str = "mask") -> np.ndarray:
    """(n, C) int64: the pixels of each class in each mask (class-id images or arrays)."""
    rows = []
    for number, mask in enumerate(masks):
        ids = mask_to_ids(mask)
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise DataError(f"{name} {number} holds class id {int(ids.max())}, but there are {num_classes} classes")
        rows.append(np.bincount(ids.ravel(), minlength=num_classes))
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), num_classes)


def fractions_of(counts: np.ndarray) -> np.ndarray:
    """Per-image class fractions (n, C) from pixel counts."""
    counts = np.asarray(counts, dtype=np.float64)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)


def dataset_pixel_counts(data: datasets.Dataset, num_classes: int, name: str = "mask") -> np.ndarray:
    """`class_pixel_counts` of a dataset's `mask` column (only that column is decoded)."""
    return class_pixel_counts((row["mask"] for row in data.select_columns(["mask"])), num_classes, name)


# ----------------------------------------------------------------------------- the real target
@dataclass(frozen=True)
class RealTarget:
    """The real training set's per-image class pixel counts: what the kept set is matched to."""

    source: str  # DATA as given
    class_names: List[str]
    counts: np.ndarray  # (R, C) pixels of each class per real image

    @property
    def oil_index(self) -> int:
        return oil_class_index(self.class_names)

    @property
    def oil(self) -> np.ndarray:
        return fractions_of(self.counts)[:, self.oil_index]

    @property
    def fingerprint(self) -> str:
        """sha256 of the class names and every image's class pixel counts: a resume must match it."""
        payload = json.dumps([self.class_names, self.counts.tolist()])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_real_set(spec: str, loader: Optional[Callable[[str], datasets.Dataset]] = None) -> datasets.Dataset:
    """The train split DATA names (any source `--real` takes), with errors of one line naming --match-real.

    `loader(spec)` reads it (the CLI passes one with its source flags; default: `load_source(spec, split="train")`).
    A `dakter generate` folder is refused: the target is real data.
    """
    path = source_path(spec)
    if path is not None:
        if not os.path.exists(path):
            raise DataError(f"{FLAG} {spec}: no such file or folder (expected real training data: {_FORMS})")
        if os.path.isdir(path) and (
            (read_marker(path) or {}).get("kind") == "generate" or is_generated_card(os.path.join(path, "README.md"))
        ):
            raise DataError(f"{FLAG} {spec} is a `dakter generate` folder (generated data); it takes real data")
    loader = loader or (lambda source: load_source(source, split="train")["train"])
    try:
        data = loader(spec)
    except (DataError, OSError, ValueError) as error:
        message = " ".join(str(error).split())
        message = message[len(spec) + 2 :] if message.startswith(f"{spec}: ") else message
        raise DataError(f"{FLAG} {spec}: {message}") from None
    if len(data) == 0:
        raise DataError(f"{FLAG} {spec}: the training split holds no images")
    return data


_FORMS = "sos:ROOT, osd:ROOT, folder:ROOT, simulate:N or a `dakter data` folder"


def real_target(data: datasets.Dataset, spec: str, class_names: Sequence[str]) -> RealTarget:
    """The per-image class pixel counts of the real set, whose classes must be the pipeline's."""
    try:
        names = class_names_of(data)
    except ValueError as error:
        raise DataError(f"{FLAG} {spec}: {error}") from None
    if list(names) != list(class_names):
        raise DataError(f"{FLAG} {spec} has the classes {list(names)}; the pipeline samples {list(class_names)}")
    counts = dataset_pixel_counts(data, len(names), name=f"{FLAG} {spec}: mask")
    return RealTarget(spec, list(names), counts)


# ----------------------------------------------------------------------------- the rule
@dataclass(frozen=True)
class Selection:
    """What :func:`select_matching` kept, and the strata it kept them by."""

    kept: np.ndarray  # candidate indices kept, ascending
    edges: List[float]  # oil-fraction edges between the strata with oil
    low: List[float]  # per stratum: the smallest real fraction in it (nan where none)
    high: List[float]  # per stratum: the largest real fraction in it
    real: List[int]  # per stratum: real images
    targets: List[int]  # per stratum: N x real share, rounded cumulatively
    available: List[int]  # per stratum: candidates
    borrowed: List[int]  # per stratum: slots filled from other strata's candidates (step 4)


def strata_edges(real_oil: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Edges between the strata with oil: the quantiles k / bins of the real images' positive oil fractions."""
    positive = np.asarray(real_oil, dtype=np.float64)
    positive = positive[positive > 0]
    if positive.size == 0:
        return np.zeros(0)
    return np.unique(np.quantile(positive, np.arange(1, bins) / bins))


def stratum_of(oil: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """0 for no oil, else 1 + the number of edges below f (stratum j holds edge[j-2] < f <= edge[j-1])."""
    oil = np.asarray(oil, dtype=np.float64)
    return np.where(oil > 0, 1 + np.searchsorted(edges, oil, side="left"), 0)


def proportional_counts(shares: np.ndarray, total: int) -> np.ndarray:
    """Whole counts proportional to whole `shares`, summing to `total`: cumulative rounding.

    Count j = round(total x S_j / S) - round(total x S_(j-1) / S), S_j the sum of the first j + 1 shares
    (halves rounded up, in integers): the rounding spreads along the strata instead of favouring one end.
    """
    cumulative = np.concatenate([[0], np.cumsum(np.asarray(shares, dtype=np.int64))])
    rounded = (2 * total * cumulative + cumulative[-1]) // (2 * cumulative[-1])
    return np.diff(rounded)


def select_matching(candidate_oil, real_oil, count: int, bins: int = BINS) -> Selection:
    """Keep `count` of the candidates (in index order) so that their oil fractions match the real ones'.

    See the module docstring for the rule; it depends only on the two arrays (and `bins`).
    """
    candidate_oil = np.asarray(candidate_oil, dtype=np.float64)
    real_oil = np.asarray(real_oil, dtype=np.float64)
    if not 0 < count <= len(candidate_oil):
        raise ValueError(f"cannot keep {count} of {len(candidate_oil)} candidates")
    if real_oil.size == 0:
        raise ValueError("no real images to match")
    edges = strata_edges(real_oil, bins)
    num_strata = len(edges) + 2
    real_strata = stratum_of(real_oil, edges)
    strata = stratum_of(candidate_oil, edges)
    real = np.bincount(real_strata, minlength=num_strata)
    targets = proportional_counts(real, count)
    available = np.bincount(strata, minlength=num_strata)
    low = [float(real_oil[real_strata == s].min()) if real[s] else float("nan") for s in range(num_strata)]
    high = [float(real_oil[real_strata == s].max()) if real[s] else float("nan") for s in range(num_strata)]

    taken = np.zeros(len(candidate_oil), dtype=bool)
    for s in range(num_strata):  # step 3: each stratum's own candidates, in index order
        taken[np.flatnonzero(strata == s)[: targets[s]]] = True
    borrowed = np.maximum(targets - available, 0)
    for s in np.flatnonzero(borrowed):  # step 4: the nearest unused candidates
        free = np.flatnonzero(~taken)
        distance = np.maximum(np.maximum(low[s] - candidate_oil[free], candidate_oil[free] - high[s]), 0.0)
        taken[free[np.lexsort((free, distance))][: borrowed[s]]] = True
    return Selection(
        kept=np.flatnonzero(taken),
        edges=[float(e) for e in edges],
        low=low,
        high=high,
        real=real.tolist(),
        targets=targets.tolist(),
        available=available.tolist(),
        borrowed=borrowed.tolist(),
    )


def ks_distance(a, b) -> float:
    """Kolmogorov-Smirnov distance: the largest gap between the empirical distributions of `a` and `b`."""
    a, b = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    points = np.concatenate([a, b])
    gap = np.searchsorted(a, points, side="right") / len(a) - np.searchsorted(b, points, side="right") / len(b)
    return float(np.abs(gap).max())


def oil_summary(oil, real_oil) -> Dict[str, float]:
    """Mean per-image oil fraction, share of images with oil and the KS distance to the real fractions."""
    oil = np.asarray(oil, dtype=np.float64)
    return {
        "mean": float(oil.mean()),
        "images_with_oil": float((oil > 0).mean()),
        "ks_to_real": ks_distance(oil, real_oil),
    }


def curation_record(
    selection: Selection, candidate_counts: np.ndarray, target: RealTarget, config: GenerationConfig
) -> dict:
    """What OUT/curation.json holds (and the card summarises): the rule, the strata, before/after, the kept rows."""
    candidate_fractions, real_fractions = fractions_of(candidate_counts), fractions_of(target.counts)
    kept_fractions = candidate_fractions[selection.kept]
    oil, real_oil = target.oil_index, target.oil

    def nan_to_none(values):
        return [None if np.isnan(v) else v for v in values]

    strata = [
        {"low": lo, "high": hi, "real": r, "target": t, "candidates": a, "borrowed": b}
        for lo, hi, r, t, a, b in zip(
            nan_to_none(selection.low),
            nan_to_none(selection.high),
            selection.real,
            selection.targets,
            selection.available,
            selection.borrowed,
        )
    ]
    return {
        "rule": RULE,
        "bins": BINS,
        "match_real": target.source,
        "real_fingerprint": target.fingerprint,
        "real_images": int(len(target.counts)),
        "oil_class": target.class_names[oil],
        "over_generate": config.over_generate,
        "num_candidates": int(len(candidate_counts)),
        "num_kept": int(len(selection.kept)),
        "borrowed": int(sum(selection.borrowed)),
        "edges": selection.edges,
        "strata": strata,
        "oil_fraction": {
            "candidates": oil_summary(candidate_fractions[:, oil], real_oil),
            "kept": oil_summary(kept_fractions[:, oil], real_oil),
            "real": oil_summary(real_oil, real_oil),
        },
        "class_fractions": {
            "class_names": target.class_names,
            "candidates": candidate_fractions.mean(axis=0).tolist(),
            "kept": kept_fractions.mean(axis=0).tolist(),
            "real": real_fractions.mean(axis=0).tolist(),
        },
        "kept_indices": selection.kept.tolist(),
        "kept_seeds": (config.base_seed + selection.kept).tolist(),
    }


# ----------------------------------------------------------------------------- the generation
def candidate_config(config: GenerationConfig) -> GenerationConfig:
    """The plain generation of the candidates (OUT/candidates): round(FACTOR x N) samples, no hf copy, no card."""
    return dataclasses.replace(
        config, num_samples=config.num_candidates, match_real=None, match_real_fingerprint=None, save_to_disk=False
    )


def generate_curated(
    out: str,
    pipe: DAKTerPipeline,
    config: GenerationConfig,
    target: RealTarget,
    workers: Workers,
    show_progress: bool = True,
) -> Optional[str]:
    """The candidates (resumable shards in OUT/candidates), then the kept set as OUT's dataset, the record, the card.

    Returns `out` when the dataset is complete, else None (other processes still have candidates to make).
    `out` is claimed already (`dataset.claim_output`, with `config.record()` holding the factor and the real
    fingerprint), so a rerun with other settings or another real set is refused before this runs.
    """
    check_or_write_config(out, config, workers.writer)
    if is_finalized(out):
        return out if workers.writer else None
    folder = os.path.join(out, CANDIDATES)
    if workers.writer:
        for where in (folder, os.path.join(folder, "data"), os.path.join(folder, ".soft_label_kl")):
            remove_leftovers(where, {"*.tmp": "half-written file"})
        remove_leftovers(os.path.join(out, ".soft_label_kl"), {"*.tmp": "half-written file"})
    candidates = candidate_config(config)
    if generate_shards(folder, pipe, candidates, workers, show_progress, finalize=False) is None:
        return None
    keep(out, config, candidates, target)
    return out


def keep(out: str, config: GenerationConfig, candidates: GenerationConfig, target: RealTarget) -> dict:
    """Choose the kept rows, write them as OUT's shards (each at most once), then the record and the card."""
    folder = os.path.join(out, CANDIDATES)
    files = [shard_path(folder, candidates, k) for k in range(candidates.num_shards)]
    data = datasets.load_dataset("parquet", data_files={"train": files}, split="train")
    if data["index"] != list(range(candidates.num_samples)):
        raise DataError(f"{folder}: the candidate shards do not hold samples 0 .. {candidates.num_samples - 1}")
    counts = dataset_pixel_counts(data, len(config.class_names), name=f"{folder}: candidate")
    selection = select_matching(fractions_of(counts)[:, target.oil_index], target.oil, config.num_samples)
    kl = None
    kl_files = [kl_file(folder, k) for k in range(candidates.num_shards)]
    if config.label_loss == "ce" and all(os.path.isfile(f) for f in kl_files):
        kl = np.concatenate([np.load(f) for f in kl_files])
    for shard in range(config.num_shards):
        path = shard_path(out, config, shard)
        if os.path.isfile(path):
            continue  # written by an interrupted run: the same rows (the choice is deterministic)
        rows = selection.kept[shard * config.shard_size : (shard + 1) * config.shard_size]
        if kl is not None:  # the shard's float16 cost first, as generate_shards does
            os.makedirs(os.path.dirname(kl_file(out, shard)), exist_ok=True)
            with atomic_write(kl_file(out, shard), "wb") as handle:
                np.save(handle, kl[rows])
        with atomic_path(path) as temporary:
            data.select(rows.tolist()).to_parquet(temporary)
    record = curation_record(selection, counts, target, config)
    atomic_write_json(os.path.join(out, CURATION_NAME), record)
    finalize_generated_dataset(out, config, curation=record)
    return record
