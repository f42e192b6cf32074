"""The pipeline a generation samples: loaded and checked, its weights fingerprinted, its sampler set."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Optional, Tuple

import torch

from dakter_hf.generation.config import GenerationConfig, GenerationSettings
from dakter_hf.generation.schedulers import configure_sampling
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline, has_label_timestep
from dakter_hf.utils.hub import is_hub_id


DAKTER_CLASS_NAMES = ("DAKTerPipeline",)


def _pipeline_class(model_index: dict) -> str:
    value = model_index.get("_class_name")
    return value[-1] if isinstance(value, (list, tuple)) else str(value)


def check_pipeline_kind(pipeline: str, model_index: dict) -> None:
    """Only DAKTer pipelines: a DDPMPipeline with 1 + C channels must not pass for a C-class model."""
    name = _pipeline_class(model_index)
    custom = model_index.get("custom_pipeline") or ""
    if name not in DAKTER_CLASS_NAMES and "pipeline_dakter" not in str(custom):
        raise ValueError(
            f"--pipeline {pipeline} is a {name}, not a DAKTer pipeline "
            "(expected model_index.json to name DAKTerPipeline)"
        )
    for key in ("balancing_factor", "class_names"):
        if key not in model_index:
            raise ValueError(
                f"--pipeline {pipeline}: model_index.json has no {key}; "
                "not a pipeline saved by DAKTerPipeline.save_pretrained"
            )


def load_pipeline(pipeline: str, device: Optional[str] = None, torch_dtype=None) -> DAKTerPipeline:
    """A DAKTerPipeline from a local folder or a Hub id, like diffusers' `from_pretrained`.

    The folder's (or repo's) model_index.json must name a DAKTer pipeline; anything else
    is refused with a message that says what it is.
    """
    if os.path.exists(pipeline):
        index_path = os.path.join(pipeline, "model_index.json")
        if not os.path.isfile(index_path):
            raise FileNotFoundError(
                f"--pipeline {pipeline}: no model_index.json there; "
                "expected a folder written by DAKTerPipeline.save_pretrained or a Hub id"
            )
        with open(index_path, encoding="utf-8") as handle:
            check_pipeline_kind(pipeline, json.load(handle))
    elif is_hub_id(pipeline):
        try:
            index = DAKTerPipeline.load_config(pipeline)
        except Exception as error:  # offline, missing repo, private repo, ...
            raise FileNotFoundError(
                f"--pipeline {pipeline}: could not read this Hub repo's model_index.json "
                f"({type(error).__name__}: {error})"
            ) from None
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
        raw = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor  # numpy has no bfloat16
        digest.update(raw.numpy().tobytes())
    return digest.hexdigest()[:16]


def sample_shape(pipe: DAKTerPipeline) -> Tuple[int, int]:
    """(height, width) of the pipeline's samples."""
    size = pipe.unet.config.sample_size
    return (size, size) if isinstance(size, int) else tuple(size)


def prepare_pipeline(pipe: DAKTerPipeline, generator: str, settings: GenerationSettings) -> GenerationConfig:
    """Give `pipe` the settings' sampler and precision; the record of what it will sample.

    `generator` is the pipeline folder or Hub id `pipe` came from (recorded as given).
    """
    scheduler, dtype = configure_sampling(pipe, settings.scheduler, settings.dtype)
    timesteps = pipe.scheduler.config.num_train_timesteps
    if settings.num_inference_steps > timesteps:
        raise ValueError(
            f"--steps must be at most the {timesteps} training timesteps, got {settings.num_inference_steps}"
        )
    posterior_timestep = timesteps - 1 if settings.posterior_timestep is None else int(settings.posterior_timestep)
    if settings.soft_label_source == "posterior" and posterior_timestep >= timesteps:
        raise ValueError(
            f"--posterior-timestep must be below the {timesteps} training timesteps, got {settings.posterior_timestep}"
        )
    if settings.soft_label_source != "final" and pipe.config.label_loss != "ce":
        raise ValueError(
            f"--soft-labels {settings.soft_label_source} needs a model with label logits (label_loss ce); {generator} "
            f"was trained with label_loss {pipe.config.label_loss}"
        )
    if settings.soft_label_source == "posterior" and not has_label_timestep(pipe.unet):
        warnings.warn(
            f"--soft-labels posterior on {generator}: this joint model was trained with one noise level for image "
            "and labels (--independent_label_timestep 0), so a clean image beside noisy labels is an input it never "
            "saw; train with --independent_label_timestep > 0 for a segmenter it has learnt",
            UserWarning,
            stacklevel=2,
        )
    pipe.set_progress_bar_config(disable=True)
    model = pipe.config
    return GenerationConfig(
        num_samples=int(settings.num_samples),
        base_seed=int(settings.base_seed),
        shard_size=int(settings.shard_size),
        num_inference_steps=int(settings.num_inference_steps),
        eta=float(settings.eta),
        label_noise=settings.label_noise,
        soft_label_source=settings.soft_label_source,
        trajectory_steps=int(settings.trajectory_steps),
        posterior_timestep=posterior_timestep,
        match_real=settings.match_real,
        over_generate=float(settings.over_generate),
        license=settings.license,
        scheduler=scheduler,
        dtype=dtype,
        batch_size=int(settings.batch_size),
        save_to_disk=bool(settings.save_to_disk),
        kl_temperature=float(settings.kl_temperature),
        generator=generator,
        balancing_factor=float(model.balancing_factor),
        class_names=list(model.class_names),
        resolution=int(sample_shape(pipe)[0]),
        label_loss=model.label_loss,
        label_encoding=model.label_encoding,
        image_prediction_type=model.image_prediction_type,
    )
