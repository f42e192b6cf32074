"""Sampler and precision choices for generation: `dakter generate --scheduler NAME --dtype fp16|bf16|fp32`.

DAKTerPipeline steps any diffusers scheduler (it converts the network output to what the
scheduler steps on); this module maps short names to schedulers built from the
pipeline's own scheduler config (same betas, zero-SNR rescaling and timestep spacing).
"""

from __future__ import annotations

import inspect
from typing import Dict, Optional, Tuple

import diffusers
import torch

from dakter_hf.pipelines.pipeline_dakter import joint_forward


# name -> (diffusers class name, config overrides)
SCHEDULERS: Dict[str, Tuple[str, Dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm++-3m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    # Euler ancestral cannot step on x0; it gets the clean estimate converted to epsilon
    "euler-ancestral": ("EulerAncestralDiscreteScheduler", {"prediction_type": "epsilon"}),
    "heun": ("HeunDiscreteScheduler", {}),
}
ALIASES = {
    "dpmsolver++": "dpm++",
    "dpm-solver++": "dpm++",
    "dpm": "dpm++",
    "euler-a": "euler-ancestral",
    "euler_a": "euler-ancestral",
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES = {value: key for key, value in DTYPES.items()}


def scheduler_choices() -> str:
    return ", ".join(SCHEDULERS)


def make_scheduler(name: str, config):
    """A scheduler named `name` (short name or diffusers class name) from a scheduler config."""

    key = ALIASES.get(name.lower(), name.lower())
    if key in SCHEDULERS:
        class_name, overrides = SCHEDULERS[key]
    elif hasattr(diffusers, name) and name.endswith("Scheduler"):
        class_name, overrides = name, {}
    else:
        raise ValueError(
            f"--scheduler must be one of {scheduler_choices()} or a diffusers scheduler class name, got {name!r}"
        )
    cls = getattr(diffusers, class_name)
    if (
        config.get("rescale_betas_zero_snr")
        and "rescale_betas_zero_snr" not in inspect.signature(cls.__init__).parameters
    ):
        # it would keep the flag in its config but sample on the un-rescaled betas: refuse instead
        raise ValueError(
            f"--scheduler {name}: {class_name} cannot rescale betas to zero terminal SNR, which this model was "
            "trained on; use ddim, dpm++, unipc or euler"
        )
    return cls.from_config(config, **overrides)


def with_scheduler(pipe, name: Optional[str]):
    """A pipeline sharing `pipe`'s weights that samples with scheduler `name` (None: `pipe` itself).

    Leaves `pipe` untouched, so concurrent requests (the Space) can use different samplers.
    """
    if name is None:
        return pipe
    scheduler = make_scheduler(name, pipe.scheduler.config)
    config = {
        key: value
        for key, value in pipe.config.items()
        if not key.startswith("_") and key not in ("unet", "scheduler")
    }
    clone = type(pipe)(unet=pipe.unet, scheduler=scheduler, **config)
    clone.set_progress_bar_config(disable=True)
    return clone


def resolve_dtype(name: Optional[str]) -> Optional[torch.dtype]:
    if name is None:
        return None
    if name not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def configure_sampling(pipe, scheduler: Optional[str] = None, dtype: Optional[str] = None) -> Tuple[str, str]:
    """Swap the pipeline's scheduler and cast its weights, in place; returns (scheduler class, dtype name).

    None keeps what the pipeline has. A half precision the device cannot run fails here
    with a one-line error instead of mid-generation with a stack trace.
    """
    if scheduler is not None:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    wanted = resolve_dtype(dtype)
    if wanted is not None and pipe.unet.dtype != wanted:
        pipe.to(dtype=wanted)
    if pipe.unet.dtype != torch.float32:
        check_dtype_runs(pipe)
    return type(pipe.scheduler).__name__, DTYPE_NAMES.get(pipe.unet.dtype, str(pipe.unet.dtype))


def check_dtype_runs(pipe) -> None:
    """One tiny forward pass in the pipeline's dtype on its device."""
    unet = pipe.unet
    side = 2 ** (len(unet.config.down_block_types) - 1)
    probe = torch.zeros(1, unet.config.in_channels, side, side, device=unet.device, dtype=unet.dtype)
    try:
        with torch.no_grad():
            joint_forward(unet, probe, torch.tensor(1, device=unet.device))
    except (RuntimeError, NotImplementedError) as error:
        name = DTYPE_NAMES.get(unet.dtype, str(unet.dtype))
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"--dtype {name} does not run on {unet.device.type} with this torch build ({first}); use --dtype fp32"
        ) from None
