"""Sample a DAKTer pipeline into a Hugging Face dataset of images with soft labels.

Sample i always comes from `torch.Generator().manual_seed(base_seed + i)`, so the
dataset is the same for any batch size and any number of processes. Samples are
written as parquet shards of `shard_size` rows as they are made (memory does not
grow with N); a finished shard is renamed into place, so a killed run resumed with
the same command skips finished shards and ends with the same dataset.

    OUT/data/train-00000-of-0000K.parquet   load_dataset("parquet", data_dir=OUT/data)
    OUT/hf/                                 load_from_disk(OUT/hf)   (optional)
    OUT/README.md                           dataset card
    OUT/generation_config.json              what made it (checked on resume)

Soft labels are the final logits stored as float16 `Array3D(C, H, W)`: half the
bytes of float32. The card reports what that costs, measured on the samples
themselves: the KL divergence between the float32 and float16 soft labels at the
distillation temperature.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import datasets
import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from PIL import Image
from tqdm.auto import tqdm

from dakter_hf.data.features import classes_present
from dakter_hf.data.save import parquet_shard_name
from dakter_hf.errors import FolderError
from dakter_hf.generation.schedulers import configure_sampling
from dakter_hf.pipelines.pipeline_dakter import LABEL_NOISE_READINGS, DAKTerPipeline
from dakter_hf.students.losses import KD_TEMPERATURE  # the paper's T; the stored soft labels are checked at it
from dakter_hf.utils.devices import no_accelerator
from dakter_hf.utils.files import atomic_write_json, atomic_write_text, replace_folder
from dakter_hf.utils.hub import is_hub_id, push_folder
from dakter_hf.utils.ownership import FolderLock, agree_on_refusal, claim_folder, remove_leftovers

CONFIG_NAME = "generation_config.json"


def generated_features(class_names: Sequence[str], height: int, width: int, with_soft_labels: bool = True) -> datasets.Features:
    """Features of a generated dataset: image, soft_label, mask, seed, index, classes."""
    columns = {"image": datasets.Image()}
    if with_soft_labels:
        columns["soft_label"] = datasets.Array3D(shape=(len(class_names), height, width), dtype="float16")
    columns.update(
        {
            "mask": datasets.Image(),
            "seed": datasets.Value("int64"),
            "index": datasets.Value("int64"),
            "classes": datasets.List(datasets.ClassLabel(names=list(class_names))),
        }
    )
    return datasets.Features(columns)


def soft_label_kl(reference: np.ndarray, stored: np.ndarray, temperature: float = KD_TEMPERATURE) -> np.ndarray:
    """Per-sample mean over pixels of KL(softmax(ref / T) || softmax(stored / T)), logits on axis 1."""
    def log_softmax(logits):
        logits = logits.astype(np.float64) / temperature
        logits = logits - logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    log_p, log_q = log_softmax(reference), log_softmax(stored)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=1)
    return kl.reshape(kl.shape[0], -1).mean(axis=1)


@dataclass
class GenerationConfig:
    """What a generated dataset was made from; a resume must match it."""

    generator: str
    num_samples: int
    base_seed: int
    num_inference_steps: int
    eta: float
    label_noise: str
    shard_size: int
    balancing_factor: float
    class_names: List[str]
    resolution: int
    label_loss: str
    label_encoding: str
    image_prediction_type: str
    license: str
    scheduler: str = "DDIMScheduler"  # the diffusers scheduler class that sampled
    dtype: str = "fp32"  # the weights' precision while sampling

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_samples / self.shard_size)


def _shard_path(out: str, config: GenerationConfig, shard: int) -> str:
    return os.path.join(out, "data", parquet_shard_name("train", shard, config.num_shards))


def _check_or_write_config(out: str, config: GenerationConfig, is_main: bool) -> None:
    path = os.path.join(out, CONFIG_NAME)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            existing = json.load(handle)
        existing.pop("soft_label_kl", None)
        mismatched = {k: (existing.get(k), v) for k, v in asdict(config).items() if existing.get(k) != v}
        if mismatched:
            details = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in mismatched.items())
            raise ValueError(f"{out} holds a generation with other settings ({details}); use another --out or --overwrite")
    elif is_main:
        os.makedirs(os.path.join(out, "data"), exist_ok=True)
        atomic_write_json(path, asdict(config))


DAKTER_CLASS_NAMES = ("DAKTerPipeline",)


def _pipeline_class(model_index: dict) -> str:
    value = model_index.get("_class_name")
    return value[-1] if isinstance(value, (list, tuple)) else str(value)


def check_pipeline_kind(pipeline: str, model_index: dict) -> None:
    """Only DAKTer pipelines: a DDPMPipeline with 1 + C channels must not pass for a C-class model."""
    name = _pipeline_class(model_index)
    custom = model_index.get("custom_pipeline") or ""
    if name not in DAKTER_CLASS_NAMES and "pipeline_dakter" not in str(custom):
        raise ValueError(f"--pipeline {pipeline} is a {name}, not a DAKTer pipeline (expected model_index.json to name DAKTerPipeline)")
    for key in ("balancing_factor", "class_names"):
        if key not in model_index:
            raise ValueError(f"--pipeline {pipeline}: model_index.json has no {key}; not a pipeline saved by DAKTerPipeline.save_pretrained")


def load_pipeline(pipeline: str, device: Optional[str] = None, torch_dtype=None) -> DAKTerPipeline:
    """A DAKTerPipeline from a local folder or a Hub id, like diffusers' `from_pretrained`.

    The folder's (or repo's) model_index.json must name a DAKTer pipeline; anything else
    is refused with a message that says what it is.
    """
    if os.path.exists(pipeline):
        index_path = os.path.join(pipeline, "model_index.json")
        if not os.path.isfile(index_path):
            raise FileNotFoundError(f"--pipeline {pipeline}: no model_index.json there; expected a folder written by DAKTerPipeline.save_pretrained or a Hub id")
        with open(index_path, encoding="utf-8") as handle:
            check_pipeline_kind(pipeline, json.load(handle))
    elif is_hub_id(pipeline):
        try:
            index = DAKTerPipeline.load_config(pipeline)
        except Exception as error:  # offline, missing repo, private repo, ...
            raise FileNotFoundError(f"--pipeline {pipeline}: could not read this Hub repo's model_index.json ({type(error).__name__}: {error})") from None
        check_pipeline_kind(pipeline, dict(index))
    else:
        raise FileNotFoundError(f"--pipeline {pipeline}: no such folder, and not a Hub id (owner/name)")
    kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
    try:
        pipe = DAKTerPipeline.from_pretrained(pipeline, **kwargs)
    except OSError as error:
        raise FileNotFoundError(f"--pipeline {pipeline}: could not load the pipeline ({error})") from error
    if device:
        pipe.to(device)
    return pipe


def model_fingerprint(module) -> str:
    """sha256 of a network's weights: a resumed generation never mixes two models."""

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update((tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor).numpy().tobytes())  # numpy has no bfloat16
    return digest.hexdigest()[:16]


def check_generation_options(num_samples, batch_size, shard_size, num_inference_steps, eta, label_noise) -> None:
    """Every generation option, before anything is written."""

    checks = {"-n/--num-samples": num_samples, "--batch-size": batch_size, "--shard-size": shard_size, "--steps": num_inference_steps}
    for flag, value in checks.items():
        if value is None or isinstance(value, bool) or int(value) != value or value <= 0:
            raise ValueError(f"{flag} must be a whole number > 0, got {value!r}")
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"--eta must be in [0, 1], got {eta}")
    if label_noise not in LABEL_NOISE_READINGS:
        raise ValueError(f"--label-noise must be one of {LABEL_NOISE_READINGS}, got {label_noise!r}")


def generate_dataset(
    pipeline: str,
    out: str,
    num_samples: int,
    base_seed: int = 0,
    batch_size: int = 8,
    shard_size: int = 256,
    num_inference_steps: int = 200,
    eta: float = 0.0,
    label_noise: str = "consistent",
    license: str = "other",
    save_to_disk: bool = True,
    overwrite: bool = False,
    device: Optional[str] = None,
    process_index: Optional[int] = None,
    num_processes: Optional[int] = None,
    pipe: Optional[DAKTerPipeline] = None,
    show_progress: bool = True,
    scheduler: Optional[str] = None,
    dtype: Optional[str] = None,
) -> Optional[str]:
    """Generate `num_samples` image/soft-label pairs into `out`; returns `out` once complete.

    Args:
        pipeline: pipeline folder or Hub id (also recorded in the card).
        num_samples: N > 0.
        base_seed: sample i uses seed base_seed + i.
        batch_size: samples per pipeline call (does not change the result).
        shard_size: rows per parquet shard (the unit of resumption); part of the settings.
        process_index, num_processes: which shards this process makes (shard k goes to
            process k % num_processes). Default: from Accelerate, so `accelerate launch`
            splits the work; pass them to split by hand.
        pipe: an already loaded pipeline (skips loading `pipeline`).
        scheduler: sampler name (`dakter_hf.generation.schedulers.SCHEDULERS`: ddim, dpm++, unipc, euler, ...)
            or a diffusers scheduler class name; None keeps the pipeline's (DDIM). Recorded.
        dtype: fp32, fp16 or bf16 weights while sampling; None keeps the pipeline's. Recorded.

    Returns `out` when every shard exists and the card is written, else None (other
    processes still have shards to make).
    """
    check_generation_options(num_samples, batch_size, shard_size, num_inference_steps, eta, label_noise)

    explicit = process_index is not None
    state = None if explicit else PartialState(cpu=no_accelerator())
    if not explicit:
        process_index, num_processes = state.process_index, state.num_processes
        device = device or str(state.device)
    num_processes = num_processes or 1
    is_main = process_index == 0

    pipe = pipe or load_pipeline(pipeline, device=device)
    scheduler_name, dtype_name = configure_sampling(pipe, scheduler, dtype)
    if num_inference_steps > pipe.scheduler.config.num_train_timesteps:
        raise ValueError(f"--steps must be at most the {pipe.scheduler.config.num_train_timesteps} training timesteps, got {num_inference_steps}")
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    pipe_config = pipe.config
    config = GenerationConfig(
        generator=pipeline,
        num_samples=int(num_samples),
        base_seed=int(base_seed),
        num_inference_steps=int(num_inference_steps),
        eta=float(eta),
        label_noise=label_noise,
        shard_size=int(shard_size),
        balancing_factor=float(pipe_config.balancing_factor),
        class_names=list(pipe_config.class_names),
        resolution=int(height),
        label_loss=pipe_config.label_loss,
        label_encoding=pipe_config.label_encoding,
        image_prediction_type=pipe_config.image_prediction_type,
        license=license,
        scheduler=scheduler_name,
        dtype=dtype_name,
    )

    writer = is_main or explicit
    lock = FolderLock(out) if is_main else None
    refusal = None
    if writer:  # the folder belongs to this generation: same settings and the same weights, or nothing
        settings = asdict(config)
        settings["generator"] = os.path.abspath(pipeline) if os.path.exists(pipeline) else pipeline  # ./p and p are one model
        try:
            with contextlib.ExitStack() as undo:
                if lock is not None:
                    lock.ensure_free()  # before --overwrite could touch another writer's folder
                claim_folder(out, "generate", settings, inputs={"unet": model_fingerprint(pipe.unet)}, input_paths=[pipeline], overwrite=overwrite and is_main, flag="--out")
                if lock is not None:
                    lock.__enter__()
                    undo.callback(lock.__exit__, None, None, None)
                remove_leftovers(os.path.join(out, "data"), {"*.tmp": "half-written shard"})
                remove_leftovers(out, {"hf.tmp-*": "staging", "*.tmp": "half-written file"})
                undo.pop_all()  # success: the lock is released after generation, below
        except (FolderError, ValueError) as error:
            if state is None or state.num_processes == 1:
                raise
            refusal = error
    if state is not None:
        agree_on_refusal(refusal, state.num_processes, broadcast_object_list)
        state.wait_for_everyone()
    try:
        return _generate_into(out, pipe, config, height, width, batch_size, process_index, num_processes, is_main, explicit, state, save_to_disk, show_progress)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)


def _generate_into(out, pipe, config, height, width, batch_size, process_index, num_processes, is_main, explicit, state, save_to_disk, show_progress) -> Optional[str]:
    """The shards of this process, then (main process) the card and the save_to_disk copy."""
    _check_or_write_config(out, config, is_main or explicit)
    features = generated_features(config.class_names, height, width, with_soft_labels=config.label_loss == "ce")

    my_shards = [k for k in range(config.num_shards) if k % num_processes == process_index]
    todo = [k for k in my_shards if not os.path.isfile(_shard_path(out, config, k))]
    progress = tqdm(total=sum(_shard_rows(config, k) for k in todo), desc=f"generating ({len(todo)} shards)", disable=not show_progress)
    for shard in todo:
        rows, kl = _generate_shard(pipe, config, shard, batch_size, progress)
        if kl is not None:  # the shard's float16 cost first: a finished shard always has it
            kl_path = _kl_path(out, shard)
            os.makedirs(os.path.dirname(kl_path), exist_ok=True)
            with open(kl_path + ".tmp", "wb") as handle:
                np.save(handle, kl)
            os.replace(kl_path + ".tmp", kl_path)
        path = _shard_path(out, config, shard)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(path + ".tmp")
        os.replace(path + ".tmp", path)
    progress.close()

    if state is not None:
        state.wait_for_everyone()
        if not is_main:
            return None
    missing = [k for k in range(config.num_shards) if not os.path.isfile(_shard_path(out, config, k))]
    if missing:
        return None
    if not _is_finalized(out):
        finalize_generated_dataset(out, config, save_to_disk=save_to_disk)
    return out


def _is_finalized(out: str) -> bool:
    """A rerun of a finished generation changes nothing (the card is written last)."""
    return os.path.isfile(os.path.join(out, "README.md"))


def _kl_path(out: str, shard: int) -> str:
    """Per-shard float16 cost, kept beside (not inside) data/ until the card is written."""
    return os.path.join(out, ".soft_label_kl", f"{shard:05d}.npy")


def parquet_files(out: str) -> str:
    """Glob of a generated dataset's shards, for `load_dataset("parquet", data_files=...)`."""
    return os.path.join(out, "data", "train-*.parquet")


def _shard_rows(config: GenerationConfig, shard: int) -> int:
    return min(config.shard_size, config.num_samples - shard * config.shard_size)


def _generate_shard(pipe: DAKTerPipeline, config: GenerationConfig, shard: int, batch_size: int, progress) -> tuple:
    start = shard * config.shard_size
    indices = list(range(start, start + _shard_rows(config, shard)))
    rows: Dict[str, list] = {name: [] for name in ("image", "soft_label", "mask", "seed", "index", "classes")}
    kls = []
    for first in range(0, len(indices), batch_size):
        batch = indices[first : first + batch_size]
        seeds = [config.base_seed + i for i in batch]
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        out = pipe(
            batch_size=len(batch),
            num_inference_steps=config.num_inference_steps,
            generator=generators,
            eta=config.eta,
            label_noise=config.label_noise,
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
            kls.append(soft_label_kl(out.soft_labels, out.soft_labels.astype(np.float16)))
        progress.update(len(batch))
    if not rows["soft_label"]:
        rows.pop("soft_label")
    return rows, (np.concatenate(kls) if kls else None)


def finalize_generated_dataset(out: str, config: GenerationConfig, save_to_disk: bool = True) -> None:
    """Card, KL summary and (optionally) the save_to_disk form, once every shard exists."""
    kl_files = [_kl_path(out, k) for k in range(config.num_shards)]
    kl_summary = None
    if config.label_loss == "ce" and all(os.path.isfile(f) for f in kl_files):
        kl = np.concatenate([np.load(f) for f in kl_files])
        kl_summary = {"temperature": KD_TEMPERATURE, "mean": float(kl.mean()), "max": float(kl.max())}
    record = asdict(config)
    record["soft_label_kl"] = kl_summary
    atomic_write_json(os.path.join(out, CONFIG_NAME), record)
    if save_to_disk:
        data = datasets.load_dataset("parquet", data_files={"train": parquet_files(out)}, split="train")
        staging = tempfile.mkdtemp(prefix="hf.tmp-", dir=out)
        datasets.DatasetDict({"train": data}).save_to_disk(os.path.join(staging, "hf"))
        replace_folder(os.path.join(staging, "hf"), os.path.join(out, "hf"))
        shutil.rmtree(staging, ignore_errors=True)
    write_dataset_card(out, config, kl_summary)
    shutil.rmtree(os.path.join(out, ".soft_label_kl"), ignore_errors=True)


DATASET_CARD = """---
license: {license}
task_categories:
- image-segmentation
tags:
- dakter
- sar
- oil-spill
- synthetic
- soft-labels
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---

# Generated SAR oil-spill images with soft labels (DAKTer)

{num_samples} synthetic {resolution}x{resolution} SAR images with per-pixel soft labels over
{num_classes} classes ({class_list}), sampled from the DAKTer joint diffusion model
`{generator}`. These are **generated** images, not observations.

| | |
|---|---|
| generator | `{generator}` |
| balancing factor b | {b:.4f} |
| label loss / encoding / image parameterisation | {label_loss} / {label_encoding} / {prediction} |
| sampler | {scheduler}, {steps} steps, eta = {eta}, label noise: {label_noise}, {dtype} weights |
| seeds | sample i uses seed {first_seed} + i ({first_seed} .. {last_seed}) |

## Columns

- `image`: the generated SAR image (grey).
- `soft_label`: {soft_label_text}
- `mask`: the hard mask (argmax of the soft label; class ids).
- `seed`, `index`: reproduce sample `index` with `torch.Generator().manual_seed(seed)`.
- `classes`: class ids present in the mask; its `ClassLabel` holds the class names.

## Load

```python
from datasets import load_dataset
data = load_dataset("parquet", data_dir="data", split="train")  # or load_dataset("<repo id>")
data = data.with_format("torch")
data[0]["soft_label"].shape  # (C, H, W)
```

## Licence

`{license}`. Generated data can carry the terms of the data its generator was trained on;
check them before redistributing.
"""


def write_dataset_card(out: str, config: GenerationConfig, kl_summary: Optional[Dict]) -> str:
    if config.label_loss == "ce":
        soft_label_text = "the final label logits, float16 `Array3D(C, H, W)` (half the size of float32)."
        if kl_summary:
            soft_label_text += (
                f" Measured cost of float16 on these samples: mean KL(float32 || float16) per pixel at "
                f"T = {kl_summary['temperature']:g} is {kl_summary['mean']:.2e} (max per sample {kl_summary['max']:.2e})."
            )
    else:
        soft_label_text = "absent: this generator was trained with L2 labels (a baseline) and has no logits."
    text = DATASET_CARD.format(
        license=config.license,
        num_samples=config.num_samples,
        resolution=config.resolution,
        num_classes=len(config.class_names),
        class_list=", ".join(f"{i} = {n}" for i, n in enumerate(config.class_names)),
        generator=config.generator,
        b=config.balancing_factor,
        label_loss=config.label_loss,
        label_encoding=config.label_encoding,
        prediction=config.image_prediction_type,
        steps=config.num_inference_steps,
        eta=config.eta,
        label_noise=config.label_noise,
        scheduler=config.scheduler,
        dtype=config.dtype,
        first_seed=config.base_seed,
        last_seed=config.base_seed + config.num_samples - 1,
        soft_label_text=soft_label_text,
    )
    return atomic_write_text(os.path.join(out, "README.md"), text)


def push_generated_dataset(out: str, repo_id: str, private: bool = False, api=None) -> str:
    """Upload the card and parquet shards (not the save_to_disk copy) as a Hub dataset repo."""

    if not os.path.isfile(os.path.join(out, "README.md")):
        raise FileNotFoundError(f"{out}: no dataset card; generation is not complete")
    return push_folder(out, repo_id, private=private, repo_type="dataset", api=api, ignore_patterns=["hf/*", "*.tmp", ".soft_label_kl/*"])
