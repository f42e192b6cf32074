"""Sample a DAKTer pipeline into a Hugging Face dataset of images with soft labels.

    from dakter_hf.generation.config import GenerationSettings
    generate_dataset("outputs/model/pipeline", "outputs/generated", GenerationSettings(num_samples=1000))

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

With `match_real` (`--match-real DATA`), round(over_generate x N) candidates are generated the same
way into OUT/candidates/ and the N whose per-image oil fractions match DATA's are kept as OUT's
dataset (`curation.py`; OUT/curation.json says what was kept and why).

Where the parts live: `config.py` (the settings and the record), `loading.py` (the
pipeline), `shards.py` (shards, resume, the float16 check), `curation.py` (--match-real), `card.py`, `hub.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from typing import Optional

from accelerate import PartialState
from accelerate.utils import broadcast_object_list

from dakter_hf.data.sources import source_path
from dakter_hf.errors import FolderError
from dakter_hf.generation.config import GenerationConfig, GenerationSettings
from dakter_hf.generation.curation import generate_curated, load_real_set, real_target
from dakter_hf.generation.loading import load_pipeline, model_fingerprint, prepare_pipeline
from dakter_hf.generation.shards import Workers, generate_shards
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.utils.devices import no_accelerator
from dakter_hf.utils.ownership import FolderLock, agree_on_refusal, claim_folder, remove_leftovers


def generate_dataset(
    pipeline: str,
    out: str,
    settings: Optional[GenerationSettings] = None,
    *,
    device: Optional[str] = None,
    overwrite: bool = False,
    show_progress: bool = True,
    pipe: Optional[DAKTerPipeline] = None,
    process_index: Optional[int] = None,
    num_processes: Optional[int] = None,
    real_data=None,
    **old_keywords,
) -> Optional[str]:
    """Generate `settings.num_samples` image/soft-label pairs into `out`; returns `out` once complete.

    Args:
        pipeline: pipeline folder or Hub id (also recorded in the card).
        settings: what to sample (`GenerationSettings`).
        device: where to sample (default: Accelerate's choice).
        overwrite: empty `out` first (never a folder that holds the pipeline).
        pipe: an already loaded pipeline (skips loading `pipeline`).
        process_index, num_processes: which shards this process makes (shard k goes to
            process k % num_processes). Default: from Accelerate, so `accelerate launch`
            splits the work; pass them to split by hand.
        real_data: the train split `settings.match_real` names, loaded (a `datasets.Dataset`; the CLI
            loads it with its source flags); default: `load_source(settings.match_real, split="train")`.
        old_keywords: the settings as keywords (`num_samples=..., batch_size=...`), as before
            `GenerationSettings`; deprecated, they work for one release with a FutureWarning.

    Returns `out` when every shard exists and the card is written, else None (other
    processes still have shards to make).
    """
    settings = _settings_from_old_call(settings, old_keywords)
    if process_index is None:
        state = PartialState(cpu=no_accelerator())
        workers = Workers(state.process_index, state.num_processes, state)
        device = device or str(state.device)
    else:
        workers = Workers(process_index, num_processes or 1)
    pipe = pipe or load_pipeline(pipeline, device=device)
    config = prepare_pipeline(pipe, pipeline, settings)
    target = None
    if settings.match_real is not None:
        real = real_data if real_data is not None else load_real_set(settings.match_real)
        target = real_target(real, settings.match_real, config.class_names)
        config = dataclasses.replace(config, match_real_fingerprint=target.fingerprint)
    with contextlib.ExitStack() as hold:
        claim_output(out, pipeline, pipe, config, workers, overwrite, hold)
        if target is not None:
            return generate_curated(out, pipe, config, target, workers, show_progress)
        return generate_shards(out, pipe, config, workers, show_progress)


def claim_output(
    out: str,
    pipeline: str,
    pipe: DAKTerPipeline,
    config: GenerationConfig,
    workers: Workers,
    overwrite: bool,
    hold: contextlib.ExitStack,
) -> None:
    """Claim `out` for this generation (same settings and the same weights, or nothing) and lock it.

    Unlike a one-process command (`with FolderLock(out): claim_folder(...)`), several processes
    write one folder here, and `FolderLock` holds one PID: so the writers claim (the main process,
    or each process when the split is given by hand), only the main process locks, and `hold`
    releases the lock when the generation ends. The lock is checked before the claim, so that
    --overwrite never empties a folder another run is writing, and taken after it, so that a
    refused claim writes nothing. Under `accelerate launch` the main process shares its refusal,
    so every process stops with the same error instead of waiting at a barrier.
    """
    refusal = None
    if workers.writer:
        settings = config.record()
        # ./p and p are one model
        settings["generator"] = os.path.abspath(pipeline) if os.path.exists(pipeline) else pipeline
        lock = FolderLock(out)
        try:
            if workers.is_main:
                lock.ensure_free()
            fingerprint = {"unet": model_fingerprint(pipe.unet)}
            overwrite = overwrite and workers.is_main
            inputs = [pipeline, source_path(config.match_real) if config.match_real else None]  # DATA is an input
            claim_folder(out, "generate", settings, inputs=fingerprint, input_paths=inputs, overwrite=overwrite)
            if workers.is_main:
                hold.enter_context(lock)
            remove_leftovers(os.path.join(out, "data"), {"*.tmp": "half-written shard"})
            remove_leftovers(out, {"hf.tmp-*": "staging", "*.tmp": "half-written file"})
        except (FolderError, ValueError) as error:
            if workers.by_hand or workers.count == 1:
                raise
            refusal = error
    if not workers.by_hand:
        agree_on_refusal(refusal, workers.count, broadcast_object_list)
        workers.wait()


def _settings_from_old_call(settings, old_keywords: dict) -> GenerationSettings:
    """`generate_dataset(pipeline, out, num_samples=N, batch_size=...)`, the call before GenerationSettings.

    Kept for one release, with a FutureWarning; a third positional argument then was num_samples.
    """
    if isinstance(settings, GenerationSettings) and not old_keywords:
        return settings
    if settings is None and not old_keywords:
        raise TypeError("generate_dataset() needs settings: generate_dataset(pipeline, out, GenerationSettings(...))")
    known = {f.name for f in dataclasses.fields(GenerationSettings)}
    unknown = sorted(set(old_keywords) - known)
    if unknown:
        raise TypeError(f"generate_dataset() got unexpected keyword arguments {unknown}")
    if isinstance(settings, GenerationSettings):
        raise TypeError("generate_dataset(): pass the settings either as GenerationSettings or as keywords, not both")
    if settings is not None:
        if "num_samples" in old_keywords:
            raise TypeError("generate_dataset() got num_samples twice")
        old_keywords = dict(old_keywords, num_samples=settings)
    warnings.warn(
        "generate_dataset(pipeline, out, num_samples=..., ...) is deprecated and works for one release only; "
        "pass generate_dataset(pipeline, out, GenerationSettings(num_samples=..., ...))",
        FutureWarning,
        stacklevel=3,
    )
    return GenerationSettings(**old_keywords)
