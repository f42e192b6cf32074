"""Arguments of the joint training (`training/train_joint.py`): the dataclass, its config file, its command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from dakter_hf.data.raster import Normalization
from dakter_hf.joint.objective import canonical_prediction_type
from dakter_hf.joint.speed import check_speed_options
from dakter_hf.joint.unet import UNET_PRESETS
from dakter_hf.utils.arguments import load_config_values, parse_arguments


@dataclass
class JointTrainingArguments:
    """Arguments of `train_joint.py`; every field is a command-line flag and a config-file key."""

    data: str = field(
        default="simulate:64",
        metadata={"help": "saved dataset dir, or sos:ROOT / osd:ROOT / folder:ROOT / simulate:N"},
    )
    output_dir: str = field(
        default="outputs/dakter-joint", metadata={"help": "where checkpoints, logs and the final pipeline go"}
    )
    split: str = field(default="train", metadata={"help": "training split"})
    sensor: str = field(default="palsar", metadata={"help": "SOS sensor: palsar or sentinel"})
    classes: Optional[str] = field(default=None, metadata={"help": "comma-separated class names for folder:ROOT"})
    num_classes: int = field(default=2, metadata={"help": "classes of simulate:N (2 or 5)"})
    resolution: int = field(
        default=128, metadata={"help": "training resolution (paper: 128 in stage 1, 256 in stage 2)"}
    )
    unet_preset: str = field(default="small", metadata={"help": f"UNet preset: {', '.join(UNET_PRESETS)}"})
    unet_config: Optional[str] = field(default=None, metadata={"help": "JSON dict of UNet2DModel overrides"})
    init_from: Optional[str] = field(
        default=None, metadata={"help": "pipeline dir to start from (stage 2 from stage 1)"}
    )
    balancing_factor: str = field(
        default="default",
        metadata={
            "help": "'auto' (SNR value on the training split), 'none' (b=1), a number, or 'inherit' (from "
            "--init_from). 'default': inherit with --init_from, else auto"
        },
    )
    balance_resolution: Optional[str] = field(
        default="train",
        metadata={
            "help": "resolution b is computed at: 'train' (the training resolution), 'native', or a number. With a "
            "numeric --balancing_factor, a number or 'native' says where that b was computed (the pipeline records it)"
        },
    )
    label_loss: str = field(default="ce", metadata={"help": "ce (DAKTer) or l2 (plain DDPM / SatSynth baselines)"})
    label_encoding: str = field(default="onehot", metadata={"help": "onehot or binary (SatSynth)"})
    image_prediction: str = field(
        default="v",
        metadata={
            "help": "image channel target: v (default; real speckle with --zero_terminal_snr), sample (the paper's "
            "x0) or epsilon"
        },
    )
    snr_gamma: Optional[float] = field(default=None, metadata={"help": "min-SNR-gamma weighting of the image loss"})
    independent_label_timestep: float = field(
        default=0.0,
        metadata={
            "help": "fraction of each batch whose image stays clean while its labels get their own timestep, so the "
            "model also learns to segment (DAKTerPipeline.segment, soft labels 'posterior'); > 0 builds the UNet "
            "with a label-timestep embedding. 0: the paper (one noise level for both)"
        },
    )
    zero_terminal_snr: bool = field(
        default=True,
        metadata={
            "help": "rescale the linear betas to zero terminal SNR (default; the paper: false, with "
            "--image_prediction sample)"
        },
    )
    num_train_timesteps: int = field(default=1000, metadata={"help": "DDPM steps (paper: 1000, linear betas)"})
    augment: bool = field(default=True, metadata={"help": "random flips / rot90, identical for image and mask"})
    train_batch_size: int = field(default=16, metadata={"help": "per-device batch size"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_train_steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    max_train_minutes: Optional[float] = field(
        default=None,
        metadata={"help": "stop (checkpoint + pipeline) after this much wall time in this run; resuming continues"},
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW lr (paper: 2e-5 stage 1, 1e-5 stage 2)"})
    lr_scheduler: str = field(default="constant_with_warmup", metadata={"help": "diffusers lr schedule name"})
    lr_warmup_steps: int = field(default=0, metadata={"help": "warm-up steps"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2"})
    adam_weight_decay: float = field(default=1e-2, metadata={"help": "AdamW weight decay"})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    max_grad_norm: Optional[float] = field(default=1.0, metadata={"help": "gradient clipping (None = off)"})
    use_ema: bool = field(default=False, metadata={"help": "keep an EMA of the weights; the saved pipeline uses it"})
    ema_decay: float = field(default=0.9999, metadata={"help": "EMA decay (reached after warm-up)"})
    ema_power: float = field(default=0.75, metadata={"help": "EMA warm-up power (diffusers EMAModel)"})
    mixed_precision: str = field(
        default="auto",
        metadata={"help": "auto (bf16 where a CUDA device is present, else no), no, fp16 or bf16 (Accelerate)"},
    )
    seed: int = field(
        default=0, metadata={"help": "fixes the initial weights, the data order, noise, timesteps and augmentations"}
    )
    dataloader_num_workers: int = field(
        default=0, metadata={"help": "worker processes that decode and resize images (with --data_cache none)"}
    )
    data_cache: str = field(
        default="auto",
        metadata={
            "help": "decode the resized split once: auto (memory, or a memory-mapped .npy under "
            "OUTPUT_DIR/data_cache for large sets), memory, mmap, or none (decode every step)"
        },
    )
    channels_last: bool = field(
        default=False, metadata={"help": "channels_last memory format for the UNet (faster convolutions on GPUs)"}
    )
    torch_compile: bool = field(default=False, metadata={"help": "torch.compile the UNet"})
    torch_compile_mode: str = field(
        default="default",
        metadata={"help": "torch.compile mode: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs"},
    )
    checkpointing_steps: int = field(default=500, metadata={"help": "save a resumable checkpoint every N steps"})
    checkpoints_total_limit: Optional[int] = field(default=3, metadata={"help": "keep at most this many checkpoints"})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={"help": "'latest' or a checkpoint dir"})
    logging_steps: int = field(default=10, metadata={"help": "log losses every N steps"})
    sample_steps: int = field(default=0, metadata={"help": "log a sample grid every N steps (0 = only at the end)"})
    num_sample_images: int = field(default=4, metadata={"help": "samples in the logged grid"})
    sample_inference_steps: int = field(default=50, metadata={"help": "DDIM steps for logged samples"})
    report_to: Optional[str] = field(default="tensorboard", metadata={"help": "tensorboard, or none"})
    push_to_hub: bool = field(default=False, metadata={"help": "upload the final pipeline and its card to the Hub"})
    hub_model_id: Optional[str] = field(
        default=None, metadata={"help": "Hub repo id (default: the output folder's name)"}
    )
    hub_private: bool = field(default=False, metadata={"help": "create the Hub repo as private"})
    overwrite: bool = field(
        default=False,
        metadata={"help": "start a fresh run in a used --output_dir (its old contents are deleted; never an input)"},
    )
    intensity: str = field(
        default="linear",
        metadata={
            "help": "16-bit/float images of folder:ROOT: linear (as stored) or db (linear power to dB); a `dakter "
            "data` folder's own record wins"
        },
    )
    clip_percentiles: Optional[str] = field(
        default=None,
        metadata={"help": "LOW,HIGH percentiles stretched to 0..255 (default: 8-bit as stored, other depths 1,99)"},
    )

    def __post_init__(self):
        self.image_prediction = canonical_prediction_type(self.image_prediction)
        if self.max_train_steps <= 0:
            raise ValueError(f"--max_train_steps must be > 0, got {self.max_train_steps}")
        if self.train_batch_size <= 0 or self.gradient_accumulation_steps <= 0:
            raise ValueError("--train_batch_size and --gradient_accumulation_steps must be > 0")
        if self.resolution <= 0:
            raise ValueError(f"--resolution must be > 0, got {self.resolution}")
        if self.unet_preset not in UNET_PRESETS:
            raise ValueError(f"--unet_preset must be one of {sorted(UNET_PRESETS)}, got {self.unet_preset!r}")
        for flag, value, lowest in (
            ("checkpointing_steps", self.checkpointing_steps, 1),
            ("logging_steps", self.logging_steps, 1),
            ("sample_steps", self.sample_steps, 0),
            ("num_sample_images", self.num_sample_images, 1),
            ("sample_inference_steps", self.sample_inference_steps, 1),
            ("lr_warmup_steps", self.lr_warmup_steps, 0),
            ("num_train_timesteps", self.num_train_timesteps, 2),
            ("dataloader_num_workers", self.dataloader_num_workers, 0),
        ):
            if value < lowest:
                raise ValueError(f"--{flag} must be >= {lowest}, got {value}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(f"--checkpoints_total_limit must be >= 1 or none, got {self.checkpoints_total_limit}")
        if isinstance(self.independent_label_timestep, bool) or not 0.0 <= self.independent_label_timestep <= 1.0:
            raise ValueError(
                f"--independent_label_timestep must be a fraction in [0, 1], got {self.independent_label_timestep!r}"
            )
        if self.independent_label_timestep > 0 and self.label_loss != "ce":
            raise ValueError(
                "--independent_label_timestep trains the label head as a segmenter of label logits; it needs "
                f"--label_loss ce, got {self.label_loss}"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate}")
        if self.max_train_minutes is not None and not self.max_train_minutes > 0:
            raise ValueError(f"--max_train_minutes must be > 0, got {self.max_train_minutes}")
        check_speed_options(self.data_cache, self.mixed_precision, self.torch_compile_mode)
        Normalization.from_options(self.intensity, self.clip_percentiles)  # --intensity / --clip_percentiles


# ------------------------------------------------------------------ argument parsing
def load_config_file(path: str) -> Dict[str, Any]:
    """Read a YAML or JSON config of training arguments (checked and converted like the command line)."""
    return load_config_values(path, (JointTrainingArguments,))


def parse_args(argv: Optional[List[str]] = None) -> JointTrainingArguments:
    """Command line, optionally on top of `--config FILE` (the command line wins)."""
    return parse_arguments(
        (JointTrainingArguments,), argv, description="Train the DAKTer joint SAR image + soft-label diffusion model."
    )[0]
