"""A generation's parquet shards: which process makes which, one shard's samples, resume and finalize.

Shard k holds samples k * shard_size ... and goes to process k % num_processes. A shard is
written to a temporary name and renamed into place, so a file under its final name is
complete, and a resumed run skips it. The card is written last: a folder with one is done.

Each shard's soft labels are checked as they are stored: the KL divergence between the
float32 and the float16 soft labels at the distillation temperature, kept per shard in
OUT/.soft_label_kl/ until the card reports it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional

import datasets
import numpy as np
import torch
from accelerate import PartialState
from PIL import Image
from tqdm.auto import tqdm

from dakter_hf.data.features import classes_present
from dakter_hf.data.save import parquet_shard_name
from dakter_hf.generation.card import generated_features, write_dataset_card
from dakter_hf.generation.config import CONFIG_NAME, KL_TEMPERATURE, GenerationConfig
from dakter_hf.generation.loading import sample_shape
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.utils.files import atomic_path, atomic_write, atomic_write_json, read_json, replace_folder


@dataclass(frozen=True)
class Workers:
    """This process among the generation's processes: shard k goes to process k % count."""

    index: int
    count: int
    state: Optional[PartialState] = None  # Accelerate's, when it split the work; None when split by hand

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def by_hand(self) -> bool:
        return self.state is None

    @property
    def writer(self) -> bool:
        """Claims the folder and records the settings: the main process, or each one when split by hand."""
        return self.is_main or self.by_hand

    def shards(self, config: GenerationConfig) -> List[int]:
        return [k for k in range(config.num_shards) if k % self.count == self.index]

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def shard_path(out: str, config: GenerationConfig, shard: int) -> str:
    return os.path.join(out, "data", parquet_shard_name("train", shard, config.num_shards))


def parquet_files(out: str) -> str:
    """Glob of a generated dataset's shards, for `load_dataset("parquet", data_files=...)`."""
    return os.path.join(out, "data", "train-*.parquet")


def kl_file(out: str, shard: int) -> str:
    """Per-shard float16 cost, kept beside (not inside) data/ until the card is written."""
    return os.path.join(out, ".soft_label_kl", f"{shard:05d}.npy")


def _shard_rows(config: GenerationConfig, shard: int) -> int:
    return min(config.shard_size, config.num_samples - shard * config.shard_size)


def is_finalized(out: str) -> bool:
    """A rerun of a finished generation changes nothing (the card is written last)."""
    return os.path.isfile(os.path.join(out, "README.md"))


def check_or_write_config(out: str, config: GenerationConfig, write: bool) -> None:
    """A folder holds one generation: refuse other settings than those recorded, or record them."""
    path = os.path.join(out, CONFIG_NAME)
    record = config.record()
    existing = read_json(path)
    if existing is not None:
        existing.pop("soft_label_kl", None)
        mismatched = {k: (existing.get(k), v) for k, v in record.items() if existing.get(k) != v}
        if mismatched:
            details = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in mismatched.items())
            raise ValueError(
                f"{out} holds a generation with other settings ({details}); use another --out or --overwrite"
            )
    elif write:
        os.makedirs(os.path.join(out, "data"), exist_ok=True)
        atomic_write_json(path, record)


def soft_label_kl(reference: np.ndarray, stored: np.ndarray, temperature: float = KL_TEMPERATURE) -> np.ndarray:
    """Per-sample mean over pixels of KL(softmax(ref / T) || softmax(stored / T)), logits on axis 1."""

    def log_softmax(logits):
        logits = logits.astype(np.float64) / temperature
        logits = logits - logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    log_p, log_q = log_softmax(reference), log_softmax(stored)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1)
    return kl.reshape(kl.shape[0], -1).mean(axis=1)


def generate_shards(
    out: str,
    pipe: DAKTerPipeline,
    config: GenerationConfig,
    workers: Workers,
    show_progress: bool = True,
    finalize: bool = True,
) -> Optional[str]:
    """The shards of this process, then (once every shard exists) the card and the save_to_disk copy.

    Returns `out` when the dataset is complete, else None (other processes still have shards to make).
    `finalize=False` (curation's candidates): return `out` once every shard exists, with no card or
    save_to_disk copy, and the per-shard float16 costs kept.
    """
    check_or_write_config(out, config, workers.writer)
    height, width = sample_shape(pipe)
    features = generated_features(config.class_names, height, width, with_soft_labels=config.label_loss == "ce")

    todo = [k for k in workers.shards(config) if not os.path.isfile(shard_path(out, config, k))]
    total = sum(_shard_rows(config, k) for k in todo)
    progress = tqdm(total=total, desc=f"generating ({len(todo)} shards)", disable=not show_progress)
    for shard in todo:
        rows, kl = generate_shard(pipe, config, shard, progress)
        if kl is not None:  # the shard's float16 cost first: a finished shard always has it
            kl_path = kl_file(out, shard)
            os.makedirs(os.path.dirname(kl_path), exist_ok=True)
            with atomic_write(kl_path, "wb") as handle:
                np.save(handle, kl)
        with atomic_path(shard_path(out, config, shard)) as temporary:  # a leftover matches "*.tmp"
            datasets.Dataset.from_dict(rows, features=features).to_parquet(temporary)
    progress.close()

    workers.wait()
    if not workers.writer:
        return None
    if any(not os.path.isfile(shard_path(out, config, k)) for k in range(config.num_shards)):
        return None
    if finalize and not is_finalized(out):
        finalize_generated_dataset(out, config)
    return out


def generate_shard(pipe: DAKTerPipeline, config: GenerationConfig, shard: int, progress=None) -> tuple:
    """The rows of shard `shard` (sample i from seed base_seed + i) and their float16 cost (None for L2 labels)."""
    start = shard * config.shard_size
    indices = list(range(start, start + _shard_rows(config, shard)))
    rows: Dict[str, list] = {name: [] for name in ("image", "soft_label", "mask", "seed", "index", "classes")}
    kls = []
    for first in range(0, len(indices), config.batch_size):
        batch = indices[first : first + config.batch_size]
        seeds = [config.base_seed + i for i in batch]
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        out = pipe(
            batch_size=len(batch),
            num_inference_steps=config.num_inference_steps,
            generator=generators,
            eta=config.eta,
            label_noise=config.label_noise,
            soft_label_source=config.soft_label_source,
            trajectory_steps=config.trajectory_steps,
            posterior_timestep=config.posterior_timestep,
            output_type="np",
        )
        for k, (index, seed) in enumerate(zip(batch, seeds)):
            grey = (out.images[k, ..., 0] * 255).round().astype(np.uint8)
            mask = out.masks[k].astype(np.uint8)
            rows["image"].append(Image.fromarray(grey, mode="L"))
            rows["mask"].append(Image.fromarray(mask, mode="L"))
            rows["seed"].append(seed)
            rows["index"].append(index)
            rows["classes"].append(classes_present(mask))
            if out.soft_labels is not None:
                rows["soft_label"].append(out.soft_labels[k].astype(np.float16))
        if out.soft_labels is not None:
            kls.append(soft_label_kl(out.soft_labels, out.soft_labels.astype(np.float16), config.kl_temperature))
        if progress is not None:
            progress.update(len(batch))
    if not rows["soft_label"]:
        rows.pop("soft_label")
    return rows, (np.concatenate(kls) if kls else None)


def finalize_generated_dataset(
    out: str, config: GenerationConfig, save_to_disk: Optional[bool] = None, curation: Optional[Dict] = None
) -> None:
    """Card, KL summary and the save_to_disk form (default: `config.save_to_disk`), once every shard exists.

    `curation`: what a curated generation kept (`curation.curation_record`), for the card.
    """
    save_to_disk = config.save_to_disk if save_to_disk is None else save_to_disk
    kl_files = [kl_file(out, k) for k in range(config.num_shards)]
    kl_summary = None
    if config.label_loss == "ce" and all(os.path.isfile(f) for f in kl_files):
        kl = np.concatenate([np.load(f) for f in kl_files])
        kl_summary = {"temperature": config.kl_temperature, "mean": float(kl.mean()), "max": float(kl.max())}
    record = config.record()
    record["soft_label_kl"] = kl_summary
    atomic_write_json(os.path.join(out, CONFIG_NAME), record)
    if save_to_disk:
        data = datasets.load_dataset("parquet", data_files={"train": parquet_files(out)}, split="train")
        staging = tempfile.mkdtemp(prefix="hf.tmp-", dir=out)
        datasets.DatasetDict({"train": data}).save_to_disk(os.path.join(staging, "hf"))
        replace_folder(os.path.join(staging, "hf"), os.path.join(out, "hf"))
        shutil.rmtree(staging, ignore_errors=True)
    write_dataset_card(out, config, kl_summary, curation)
    shutil.rmtree(os.path.join(out, ".soft_label_kl"), ignore_errors=True)
