"""Fast-training switches, in one place: mixed precision default, TF32, fused AdamW, channels_last, torch.compile.

Each is a no-op (with the reason) where the hardware cannot use it, so the same
command runs on a laptop CPU and on a GPU.
"""

from __future__ import annotations

import logging
from typing import Iterable, List, Tuple

import torch

from dakter_hf.data.decoded import DATA_CACHE_CHOICES


logger = logging.getLogger(__name__)

MIXED_PRECISION_CHOICES = ("auto", "no", "fp16", "bf16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def cuda_present() -> bool:
    return torch.cuda.is_available()


def resolve_mixed_precision(value: str) -> str:
    """`auto` -> bf16 where a CUDA device supports it, else no; an explicit value wins."""
    if value not in MIXED_PRECISION_CHOICES:
        raise ValueError(f"--mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {value!r}")
    if value != "auto":
        return value
    return "bf16" if cuda_present() and torch.cuda.is_bf16_supported() else "no"


def enable_tf32() -> bool:
    """TF32 matmuls and convolutions on CUDA (Ampere and newer); returns whether it applies."""
    if not cuda_present():
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    return True


def adamw(parameters: Iterable[torch.nn.Parameter], device, **kwargs) -> torch.optim.AdamW:
    """AdamW, fused (one kernel for all parameters) when the parameters live on CUDA."""
    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(parameters, fused=fused or None, **kwargs)


def apply_model_options(
    model: torch.nn.Module, channels_last: bool = False, compile: bool = False, compile_mode: str = "default"
) -> List[Tuple[str, str]]:
    """channels_last memory format and torch.compile, in place (parameter names and
    state_dict keys do not change, so checkpoints and saved pipelines are as without).
    Returns (option, what happened) pairs for the log."""
    notes = []
    if channels_last:
        model.to(memory_format=torch.channels_last)
        notes.append(("channels_last", "on"))
    if compile:
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"--torch_compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
        model.compile(mode=None if compile_mode == "default" else compile_mode)
        notes.append(("torch_compile", compile_mode))
    return notes


def contiguous_state_dict(state_dict):
    """channels_last weights are not contiguous in the NCHW sense; safetensors needs them to be."""
    return {
        name: (value.contiguous() if isinstance(value, torch.Tensor) else value) for name, value in state_dict.items()
    }


def check_speed_options(data_cache: str, mixed_precision: str, torch_compile_mode: str) -> None:
    """The data / speed flags of `train_joint.py`, checked before anything is written."""

    if data_cache not in DATA_CACHE_CHOICES:
        raise ValueError(f"--data_cache must be one of {DATA_CACHE_CHOICES}, got {data_cache!r}")
    if mixed_precision not in MIXED_PRECISION_CHOICES:
        raise ValueError(f"--mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {mixed_precision!r}")
    if torch_compile_mode not in COMPILE_MODES:
        raise ValueError(f"--torch_compile_mode must be one of {COMPILE_MODES}, got {torch_compile_mode!r}")
