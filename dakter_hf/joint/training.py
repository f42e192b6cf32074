"""Train the joint image + label diffusion model (DAKTer stage 1 / stage 2) with Accelerate.

`training/train_joint.py` is the script users launch; the work happens here so that
tests, benchmarks and the CLI run the very same loop.

Reproducibility: the data order of epoch e comes from (seed, e), and the noise,
timesteps and augmentations of micro-batch k from (seed, k, process). Nothing
depends on hidden RNG state, so a run resumed from a checkpoint continues exactly
as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, broadcast_object_list, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from dakter_hf.data.balance import compute_balance_stats
from dakter_hf.data.decoded import BatchStream, DecodedPairs, DeviceAugment, split_cache_key
from dakter_hf.data.features import class_names_of, oil_class_index
from dakter_hf.data.raster import Normalization, normalization_for
from dakter_hf.data.sources import load_source, source_path
from dakter_hf.data.transforms import collate_pairs, pair_to_tensors, random_dihedral
from dakter_hf.data.visualize import softmax_probability, triplet_grid
from dakter_hf.errors import FolderError
from dakter_hf.joint.card import write_model_card
from dakter_hf.joint.objective import DAKTerObjective, canonical_prediction_type
from dakter_hf.joint.speed import adamw, apply_model_options, check_speed_options, enable_tf32, resolve_mixed_precision
from dakter_hf.joint.unet import UNET_PRESETS, make_joint_unet
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.utils.arguments import load_config_values, parse_arguments
from dakter_hf.utils.devices import no_accelerator
from dakter_hf.utils.files import atomic_write_json, atomic_write_text, replace_folder
from dakter_hf.utils.ownership import FolderLock, agree_on_refusal, claim_folder, dataset_fingerprint, folder_fingerprint, remove_leftovers

logger = logging.getLogger(__name__)


@dataclass
class JointTrainingArguments:
    """Arguments of `train_joint.py`; every field is a command-line flag and a config-file key."""

    data: str = field(default="simulate:64", metadata={"help": "saved dataset dir, or sos:ROOT / osd:ROOT / folder:ROOT / simulate:N"})
    output_dir: str = field(default="outputs/dakter-joint", metadata={"help": "where checkpoints, logs and the final pipeline go"})
    split: str = field(default="train", metadata={"help": "training split"})
    sensor: str = field(default="palsar", metadata={"help": "SOS sensor: palsar or sentinel"})
    classes: Optional[str] = field(default=None, metadata={"help": "comma-separated class names for folder:ROOT"})
    num_classes: int = field(default=2, metadata={"help": "classes of simulate:N (2 or 5)"})
    resolution: int = field(default=128, metadata={"help": "training resolution (paper: 128 in stage 1, 256 in stage 2)"})
    unet_preset: str = field(default="small", metadata={"help": f"UNet preset: {', '.join(UNET_PRESETS)}"})
    unet_config: Optional[str] = field(default=None, metadata={"help": "JSON dict of UNet2DModel overrides"})
    init_from: Optional[str] = field(default=None, metadata={"help": "pipeline dir to start from (stage 2 from stage 1)"})
    balancing_factor: str = field(
        default="default",
        metadata={"help": "'auto' (SNR value on the training split), 'none' (b=1), a number, or 'inherit' (from --init_from). 'default': inherit with --init_from, else auto"},
    )
    balance_resolution: Optional[str] = field(default="train", metadata={"help": "resolution b is computed at: 'train' (the training resolution), 'native', or a number"})
    label_loss: str = field(default="ce", metadata={"help": "ce (DAKTer) or l2 (plain DDPM / SatSynth baselines)"})
    label_encoding: str = field(default="onehot", metadata={"help": "onehot or binary (SatSynth)"})
    image_prediction: str = field(default="v", metadata={"help": "image channel target: v (default; real speckle with --zero_terminal_snr), sample (the paper's x0) or epsilon"})
    snr_gamma: Optional[float] = field(default=None, metadata={"help": "min-SNR-gamma weighting of the image loss"})
    zero_terminal_snr: bool = field(default=True, metadata={"help": "rescale the linear betas to zero terminal SNR (default; the paper: false, with --image_prediction sample)"})
    num_train_timesteps: int = field(default=1000, metadata={"help": "DDPM steps (paper: 1000, linear betas)"})
    augment: bool = field(default=True, metadata={"help": "random flips / rot90, identical for image and mask"})
    train_batch_size: int = field(default=16, metadata={"help": "per-device batch size"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_train_steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    max_train_minutes: Optional[float] = field(default=None, metadata={"help": "stop (checkpoint + pipeline) after this much wall time in this run; resuming continues"})
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
    mixed_precision: str = field(default="auto", metadata={"help": "auto (bf16 where a CUDA device is present, else no), no, fp16 or bf16 (Accelerate)"})
    seed: int = field(default=0, metadata={"help": "fixes the initial weights, the data order, noise, timesteps and augmentations"})
    dataloader_num_workers: int = field(default=0, metadata={"help": "worker processes that decode and resize images (with --data_cache none)"})
    data_cache: str = field(default="auto", metadata={"help": "decode the resized split once: auto (memory, or a memory-mapped .npy under OUTPUT_DIR/data_cache for large sets), memory, mmap, or none (decode every step)"})
    channels_last: bool = field(default=False, metadata={"help": "channels_last memory format for the UNet (faster convolutions on GPUs)"})
    torch_compile: bool = field(default=False, metadata={"help": "torch.compile the UNet"})
    torch_compile_mode: str = field(default="default", metadata={"help": "torch.compile mode: default, reduce-overhead, max-autotune, max-autotune-no-cudagraphs"})
    checkpointing_steps: int = field(default=500, metadata={"help": "save a resumable checkpoint every N steps"})
    checkpoints_total_limit: Optional[int] = field(default=3, metadata={"help": "keep at most this many checkpoints"})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={"help": "'latest' or a checkpoint dir"})
    logging_steps: int = field(default=10, metadata={"help": "log losses every N steps"})
    sample_steps: int = field(default=0, metadata={"help": "log a sample grid every N steps (0 = only at the end)"})
    num_sample_images: int = field(default=4, metadata={"help": "samples in the logged grid"})
    sample_inference_steps: int = field(default=50, metadata={"help": "DDIM steps for logged samples"})
    report_to: Optional[str] = field(default="tensorboard", metadata={"help": "tensorboard, or none"})
    push_to_hub: bool = field(default=False, metadata={"help": "upload the final pipeline and its card to the Hub"})
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "Hub repo id (default: the output folder's name)"})
    hub_private: bool = field(default=False, metadata={"help": "create the Hub repo as private"})
    overwrite: bool = field(default=False, metadata={"help": "start a fresh run in a used --output_dir (its old contents are deleted; never an input)"})
    intensity: str = field(default="linear", metadata={"help": "16-bit/float images of folder:ROOT: linear (as stored) or db (linear power to dB); a `dakter data` folder's own record wins"})
    clip_percentiles: Optional[str] = field(default=None, metadata={"help": "LOW,HIGH percentiles stretched to 0..255 (default: 8-bit as stored, other depths 1,99)"})

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
        for flag, value, lowest in (("checkpointing_steps", self.checkpointing_steps, 1), ("logging_steps", self.logging_steps, 1), ("sample_steps", self.sample_steps, 0), ("num_sample_images", self.num_sample_images, 1), ("sample_inference_steps", self.sample_inference_steps, 1), ("lr_warmup_steps", self.lr_warmup_steps, 0), ("num_train_timesteps", self.num_train_timesteps, 2), ("dataloader_num_workers", self.dataloader_num_workers, 0)):
            if value < lowest:
                raise ValueError(f"--{flag} must be >= {lowest}, got {value}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(f"--checkpoints_total_limit must be >= 1 or none, got {self.checkpoints_total_limit}")
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
    return parse_arguments((JointTrainingArguments,), argv, description="Train the DAKTer joint SAR image + soft-label diffusion model.")[0]


# ---------------------------------------------------------------------- data order
def epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator)


class BatchPlan:
    """This process's share of global micro-batch k, for k = start, start + 1, ...

    Epoch e is the permutation drawn from (seed, e) (the last partial batch is
    dropped); process p takes rows [p * batch, (p + 1) * batch) of each global batch.
    Used as a DataLoader `batch_sampler`, so worker processes can decode ahead.
    """

    def __init__(self, num_items: int, batch_size: int, num_processes: int, process_index: int, seed: int, start: int = 0):
        self.num_items, self.batch_size, self.seed, self.start = num_items, batch_size, seed, start
        self.global_batch = batch_size * num_processes
        self.offset = process_index * batch_size
        self.per_epoch = num_items // self.global_batch

    def __iter__(self):
        step = self.start
        epoch, order = None, None
        while True:
            this_epoch, position = divmod(step, self.per_epoch)
            if this_epoch != epoch:
                epoch, order = this_epoch, epoch_permutation(self.num_items, self.seed, this_epoch)
            first = position * self.global_batch + self.offset
            yield order[first : first + self.batch_size].tolist()
            step += 1


def step_generator(seed: int, micro_step: int, process_index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_step) * 1009 + process_index)


class ResizedPairs(torch.utils.data.Dataset):
    """Rows of a segmentation split as training tensors at one resolution (no augmentation)."""

    def __init__(self, split, resolution: int):
        self.split = split.select_columns(["image", "mask"])  # skip decoding the other columns
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        row = self.split[int(index)]
        return pair_to_tensors(row["image"], row["mask"], self.resolution)


def micro_batches(args: JointTrainingArguments, train_split, plan: BatchPlan, accelerator, objective: DAKTerObjective, first_micro_step: int = 0):
    """(images, masks, timesteps, noise) on the training device for micro-batch k = first, first + 1, ...

    Both data paths give the same tensors for the same seed and k: `--data_cache none`
    decodes and resizes rows every step (DataLoader + `ResizedPairs`, flips/rot90 on the
    CPU); otherwise the split is decoded once, here, before training starts
    (`fast_data.DecodedPairs`), and batches are assembled and augmented on the device
    (prepared one step ahead in a background thread on a GPU). Returns a generator.
    """
    device, process = accelerator.device, accelerator.process_index
    num_timesteps = objective.scheduler.config.num_train_timesteps
    if args.data_cache == "none":
        loader = iter(torch.utils.data.DataLoader(ResizedPairs(train_split, args.resolution), batch_sampler=plan, collate_fn=collate_pairs, num_workers=args.dataloader_num_workers))
        return _loader_micro_batches(loader, args, objective, device, process, first_micro_step)
    cache_dir = os.path.join(args.output_dir, "data_cache")
    with accelerator.main_process_first():  # a memory-mapped cache is written once, by the main process
        key = split_cache_key(train_split, args.data, args.sensor, args.split, args.classes, args.num_classes)
        decoded = DecodedPairs.from_split(train_split, args.resolution, mode=args.data_cache, cache_dir=cache_dir, key=key, show_progress=accelerator.is_local_main_process)
    logger.info("decoded %d training pairs once at %d px (%.1f MB of uint8)", len(decoded), args.resolution, decoded.nbytes / 2**20)
    stream = BatchStream(decoded, plan, lambda k: step_generator(args.seed, k, process), first_micro_step, args.augment, num_timesteps, objective.channels, pin_memory=device.type == "cuda", background=device.type == "cuda")
    return _stream_micro_batches(stream, DeviceAugment(args.resolution, device), device)


def _loader_micro_batches(loader, args: JointTrainingArguments, objective: DAKTerObjective, device, process: int, micro_step: int):
    num_timesteps = objective.scheduler.config.num_train_timesteps
    while True:
        generator = step_generator(args.seed, micro_step, process)
        images, masks = _augmented(next(loader), args.augment, generator)
        timesteps = torch.randint(0, num_timesteps, (images.shape[0],), generator=generator)
        noise = torch.randn((images.shape[0], objective.channels, *images.shape[2:]), generator=generator)
        yield tuple(t.to(device) for t in (images, masks, timesteps, noise))
        micro_step += 1


def _stream_micro_batches(stream: BatchStream, augment: DeviceAugment, device):
    try:
        for item in stream:
            images, masks = augment(item.images, item.masks, item.codes)
            yield images, masks, item.timesteps.to(device, non_blocking=True), item.noise.to(device, non_blocking=True)
    finally:
        stream.close()


# -------------------------------------------------------------------------- helpers
def balance_resolution_of(balance_resolution: Optional[str], resolution: int) -> Optional[int]:
    """--balance_resolution as pixels: 'train' -> the training resolution, 'native'/None -> None (native size)."""
    if balance_resolution == "train":
        return resolution
    if balance_resolution in (None, "native"):
        return None
    return int(balance_resolution)


def resolve_balancing_factor(args: JointTrainingArguments, train_split, init_pipeline, show_progress: bool = True) -> Dict[str, Any]:
    """b and how it was obtained, for the pipeline config and the model card."""
    choice = str(args.balancing_factor).lower()
    if choice == "default":
        choice = "inherit" if init_pipeline is not None else "auto"
    if choice == "inherit":
        if init_pipeline is None:
            raise ValueError("--balancing_factor inherit needs --init_from")
        return {"b": float(init_pipeline.config.balancing_factor), "how": f"inherited from {args.init_from}", "resolution": init_pipeline.config.balance_resolution}
    if choice == "none":
        return {"b": 1.0, "how": "none (b = 1)", "resolution": None}
    if choice == "auto":
        resolution = balance_resolution_of(args.balance_resolution, args.resolution)
        stats = compute_balance_stats(train_split, resolution=resolution, show_progress=show_progress)
        where = "native size" if resolution is None else f"{resolution} px"
        return {"b": stats.b, "how": f"SNR value on {stats.num_images} training images at {where}", "resolution": resolution}
    try:
        value = float(choice)
    except ValueError:
        raise ValueError(f"--balancing_factor must be auto, none, inherit or a number, got {choice!r}") from None
    if not value > 0:
        raise ValueError(f"--balancing_factor must be > 0, got {value}")
    return {"b": value, "how": "given", "resolution": None}


def sorted_checkpoints(output_dir: str) -> List[str]:
    if not os.path.isdir(output_dir):
        return []
    names = [n for n in os.listdir(output_dir) if n.startswith("checkpoint-") and n.split("-")[-1].isdigit()]
    return [os.path.join(output_dir, n) for n in sorted(names, key=lambda n: int(n.split("-")[-1]))]


def build_pipeline(unet, objective: DAKTerObjective, class_names, balance: Dict[str, Any], input_normalization: Optional[dict] = None) -> DAKTerPipeline:
    return DAKTerPipeline(
        input_normalization=input_normalization,
        unet=unet,
        scheduler=objective.sampling_scheduler(),
        balancing_factor=balance["b"],
        class_names=class_names,
        label_loss=objective.label_loss,
        label_encoding=objective.label_encoding,
        image_prediction_type=objective.image_prediction_type,
        balance_resolution=balance["resolution"],
    )


def check_init_options(args: JointTrainingArguments, init_pipeline: DAKTerPipeline, class_names: List[str]) -> None:
    """Stage 2 must continue stage 1's objective: same classes, labels, parameterisation, schedule."""
    config, schedule = init_pipeline.config, init_pipeline.scheduler.config
    expected = {
        "classes": (list(config.class_names), class_names),
        "--label_loss": (config.label_loss, args.label_loss),
        "--label_encoding": (config.label_encoding, args.label_encoding),
        "--image_prediction": (config.image_prediction_type, args.image_prediction),
        "--zero_terminal_snr": (bool(schedule.rescale_betas_zero_snr), bool(args.zero_terminal_snr)),
        "--num_train_timesteps": (schedule.num_train_timesteps, args.num_train_timesteps),
    }
    conflicts = [f"{name}: {was!r} in stage 1, {now!r} now" for name, (was, now) in expected.items() if was != now]
    if conflicts:
        raise ValueError(f"--init_from {args.init_from} was trained differently; pass matching options ({'; '.join(conflicts)})")


def unet_downsampling(unet) -> int:
    return 2 ** (len(unet.config.down_block_types) - 1)


# ----------------------------------------------------------------------------- main
def train(args: JointTrainingArguments) -> str:
    """Run training; returns the directory of the saved pipeline.

    The output folder is claimed before anything is written into it (see `ownership.py`):
    a used folder is continued only with `--resume_from_checkpoint` and the same settings
    and data, replaced only with `--overwrite`, and held by one process at a time.
    """
    with contextlib.ExitStack() as hold:
        return _train(args, hold)


# how long and how visibly a run goes, not what it computes: a resumed run may change them
# (a longer --max_train_steps extends a run; with a decaying lr schedule that is your choice)
RUN_CONTROL = {"output_dir", "resume_from_checkpoint", "max_train_minutes", "max_train_steps", "data_cache", "channels_last", "torch_compile", "torch_compile_mode", "overwrite", "logging_steps", "report_to", "push_to_hub", "hub_model_id", "hub_private", "dataloader_num_workers", "checkpointing_steps", "checkpoints_total_limit", "sample_steps", "num_sample_images", "sample_inference_steps"}


def _claim_output_dir(accelerator, args: JointTrainingArguments, train_split, hold: contextlib.ExitStack) -> None:
    """Claim --output_dir for this run (main process), take its lock, clear an interrupted run's leftovers."""

    refusal = None
    if accelerator.is_main_process:
        settings = {k: v for k, v in dataclasses.asdict(args).items() if k not in RUN_CONTROL}
        if source_path(args.data):
            settings["data"] = os.path.abspath(args.data) if os.path.exists(args.data) else args.data  # ./d and d are one input
        inputs = {"data": dataset_fingerprint(train_split), "init_from": folder_fingerprint(args.init_from) if args.init_from else None}
        lock = FolderLock(args.output_dir, flag="--output_dir")
        try:
            lock.ensure_free()
            claim_folder(
                args.output_dir,
                "train-joint",
                settings,
                inputs,
                input_paths=[source_path(args.data), args.init_from],
                overwrite=args.overwrite,
                allow_resume=bool(args.resume_from_checkpoint),
                flag="--output_dir",
                resume_hint="pass --resume_from_checkpoint latest to continue it, or --overwrite to start a fresh run",
            )
            hold.enter_context(lock)
            remove_leftovers(args.output_dir, {"checkpoint-*.tmp": "half-saved checkpoint", "pipeline.tmp": "half-saved pipeline", "*.tmp": "half-written file"})
        except (FolderError, ValueError) as error:
            refusal = error
    agree_on_refusal(refusal, accelerator.num_processes, broadcast_object_list)
    accelerator.wait_for_everyone()


def _train(args: JointTrainingArguments, hold: contextlib.ExitStack) -> str:
    report_to = None if (args.report_to in (None, "none")) else args.report_to
    accelerator = Accelerator(
        cpu=no_accelerator(),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=resolve_mixed_precision(args.mixed_precision),
        log_with=report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO if accelerator.is_main_process else logging.WARNING)

    class_list = [c.strip() for c in args.classes.split(",")] if args.classes else None
    normalization = normalization_for(args.data, args.intensity, args.clip_percentiles)  # recorded in the pipeline config
    with accelerator.main_process_first():  # the main process builds the Arrow cache, the others reuse it
        data = load_source(args.data, sensor=args.sensor, split=args.split, class_names=class_list, num_classes=args.num_classes, size=args.resolution, seed=args.seed, normalization=normalization)
    train_split = data[args.split]
    class_names = class_names_of(train_split)
    init_pipeline = DAKTerPipeline.from_pretrained(args.init_from) if args.init_from else None
    if init_pipeline is not None:
        check_init_options(args, init_pipeline, class_names)
    balance = [resolve_balancing_factor(args, train_split, init_pipeline) if accelerator.is_main_process else None]
    balance = broadcast_object_list(balance)[0] if accelerator.num_processes > 1 else balance[0]
    objective = DAKTerObjective(
        num_classes=len(class_names),
        balancing_factor=balance["b"],
        label_loss=args.label_loss,
        label_encoding=args.label_encoding,
        image_prediction_type=args.image_prediction,
        snr_gamma=args.snr_gamma,
        zero_terminal_snr=args.zero_terminal_snr,
        num_train_timesteps=args.num_train_timesteps,
    )
    set_seed(args.seed)  # fixes the UNet initialisation
    if init_pipeline is not None:
        unet = init_pipeline.unet
        unet.register_to_config(sample_size=args.resolution)
    else:
        overrides = json.loads(args.unet_config) if args.unet_config else {}
        unet = make_joint_unet(len(class_names), args.unet_preset, sample_size=args.resolution, label_encoding=args.label_encoding, **overrides)
    if args.resolution % unet_downsampling(unet):
        raise ValueError(f"--resolution {args.resolution} must be a multiple of {unet_downsampling(unet)} for this UNet ({len(unet.config.down_block_types)} down blocks)")
    logger.info("b = %.4f (%s); classes %s; %d training images", balance["b"], balance["how"], class_names, len(train_split))

    global_batch = args.train_batch_size * accelerator.num_processes
    if len(train_split) < global_batch:
        raise ValueError(f"the training split has {len(train_split)} images, fewer than one global batch ({global_batch})")
    ema = EMAModel(unet.parameters(), decay=args.ema_decay, use_ema_warmup=True, power=args.ema_power, model_cls=type(unet), model_config=unet.config) if args.use_ema else None
    enable_tf32()
    unet.to(accelerator.device)  # fused AdamW needs the parameters where they will train
    for option, state in apply_model_options(unet, args.channels_last, args.torch_compile, args.torch_compile_mode):
        logger.info("%s: %s", option, state)
    optimizer = adamw(unet.parameters(), accelerator.device, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes, num_training_steps=args.max_train_steps * accelerator.num_processes)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    _claim_output_dir(accelerator, args, train_split, hold)
    global_step = _resume(accelerator, args)
    first_step = global_step
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        atomic_write_json(os.path.join(args.output_dir, "training_args.json"), dataclasses.asdict(args))
        _truncate_history(os.path.join(args.output_dir, "loss_history.jsonl"), global_step)
        if report_to:
            accelerator.init_trackers("dakter-joint", config={k: v for k, v in dataclasses.asdict(args).items() if isinstance(v, (int, float, str, bool))})

    plan = BatchPlan(len(train_split), args.train_batch_size, accelerator.num_processes, accelerator.process_index, args.seed, start=global_step * args.gradient_accumulation_steps)
    batches = micro_batches(args, train_split, plan, accelerator, objective, first_micro_step=global_step * args.gradient_accumulation_steps)
    progress = tqdm(total=args.max_train_steps, initial=global_step, desc="joint training", disable=not accelerator.is_local_main_process)
    unet.train()
    start = time.time()
    while global_step < args.max_train_steps:
        for accumulation_index in range(args.gradient_accumulation_steps):
            images, masks, timesteps, noise = next(batches)  # micro-batch global_step * accumulation + accumulation_index
            with accelerator.accumulate(unet):
                with accelerator.autocast():
                    out = objective(unet, images, masks, timesteps=timesteps, noise=noise)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(unet.parameters())
        global_step += 1
        progress.update(1)
        if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
            images_done = (global_step - first_step) * global_batch * args.gradient_accumulation_steps
            logs = {"loss": out.loss.item(), "image_loss": out.image_loss.item(), "label_loss": out.label_loss.item(), "lr": lr_scheduler.get_last_lr()[0], "images_per_second": images_done / max(time.time() - start, 1e-9)}
            progress.set_postfix(loss=f"{logs['loss']:.4f}")
            accelerator.log(logs, step=global_step)
            if accelerator.is_main_process:
                _append_jsonl(os.path.join(args.output_dir, "loss_history.jsonl"), {"step": global_step, **logs})
        out_of_time = _everyone_out_of_time(accelerator, args.max_train_minutes, start)
        if global_step % args.checkpointing_steps == 0 or global_step == args.max_train_steps or out_of_time:
            _save_checkpoint(accelerator, args, global_step)
        if args.sample_steps and global_step % args.sample_steps == 0 and accelerator.is_main_process and report_to:
            _log_samples(accelerator, unet, ema, objective, class_names, balance, args, global_step)
        if out_of_time:
            logger.info("time budget of %.1f min reached at step %d", args.max_train_minutes, global_step)
            break
    progress.close()
    batches.close()

    accelerator.wait_for_everyone()
    final_dir = os.path.join(args.output_dir, "pipeline")
    if accelerator.is_main_process:
        final_unet = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.store(final_unet.parameters())
            ema.copy_to(final_unet.parameters())
        pipeline = build_pipeline(final_unet, objective, class_names, balance, input_normalization=normalization.to_dict())
        run = {"steps": global_step, "batch": global_batch * args.gradient_accumulation_steps, "num_train_images": len(train_split)}
        _save_pipeline_with_card(pipeline, final_dir, lambda folder: write_model_card(folder, args, class_names, balance, objective, final_unet, run, display_path=final_dir))
        if report_to:
            _log_samples(accelerator, final_unet, None, objective, class_names, balance, args, global_step)
        if ema is not None:
            ema.restore(final_unet.parameters())
        if args.push_to_hub:
            from dakter_hf.utils.hub import push_folder

            push_folder(final_dir, args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir)), private=args.hub_private, repo_type="model")
    accelerator.end_training()
    return final_dir


def _augmented(batch: Dict[str, torch.Tensor], augment: bool, generator: torch.Generator):
    """Per-sample dihedral transforms drawn from this micro-batch's generator."""
    images, masks = batch["images"], batch["masks"]
    if not augment:
        return images, masks
    pairs = [random_dihedral(image, mask, generator) for image, mask in zip(images, masks)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _resume(accelerator, args: JointTrainingArguments) -> int:
    """Load the requested checkpoint; returns the step it was taken at (0 for a new run)."""
    if not args.resume_from_checkpoint:
        return 0
    if args.resume_from_checkpoint == "latest":
        found = sorted_checkpoints(args.output_dir)
        if not found:
            logger.info("no checkpoint in %s: starting a new run", args.output_dir)
            return 0
        path = found[-1]
    else:
        path = args.resume_from_checkpoint
        if not os.path.isdir(path):
            raise FileNotFoundError(f"--resume_from_checkpoint {path}: no such checkpoint folder")
    accelerator.load_state(path)
    step = int(os.path.basename(path.rstrip("/")).split("-")[-1])
    logger.info("resumed from %s at step %d", path, step)
    return step


def _everyone_out_of_time(accelerator, budget_minutes: Optional[float], start: float) -> bool:
    """All processes take the same decision (one process stopping alone would hang the others)."""
    if budget_minutes is None:
        return False
    if accelerator.num_processes == 1:  # no device tensor: a .item() every step would stall the GPU queue
        return (time.time() - start) / 60 >= budget_minutes
    flag = torch.tensor(float((time.time() - start) / 60 >= budget_minutes), device=accelerator.device)
    flag = accelerator.reduce(flag, reduction="sum")
    return bool(flag.item() > 0)


def _append_jsonl(path: str, record: Dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _truncate_history(path: str, step: int) -> None:
    """Drop log lines past the resumed step, so a resumed run has no duplicate steps."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        kept = [line for line in handle if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(kept))


def _save_checkpoint(accelerator, args: JointTrainingArguments, step: int) -> None:
    """save_state into a temporary folder, rename, and only then drop the oldest checkpoints."""
    target = os.path.join(args.output_dir, f"checkpoint-{step}")
    temporary = target + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_folder(temporary, target)
        if args.checkpoints_total_limit is not None:
            existing = sorted_checkpoints(args.output_dir)
            for old in existing[: max(0, len(existing) - args.checkpoints_total_limit)]:
                shutil.rmtree(old, ignore_errors=True)


def _save_pipeline_with_card(pipeline: DAKTerPipeline, directory: str, write_card) -> None:
    """Pipeline and model card into a temporary folder, then swapped in whole."""
    temporary = directory + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    pipeline.save_pretrained(temporary)
    write_card(temporary)
    replace_folder(temporary, directory)


def _log_samples(accelerator, unet, ema, objective, class_names, balance, args, step) -> None:
    """A grid of image | oil probability | mask to TensorBoard."""

    model = accelerator.unwrap_model(unet)
    if ema is not None:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    was_training = model.training
    model.eval()
    pipeline = build_pipeline(model, objective, class_names, balance)
    pipeline.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(args.seed + i) for i in range(args.num_sample_images)]
    out = pipeline(batch_size=args.num_sample_images, num_inference_steps=args.sample_inference_steps, generator=generators, output_type="np")
    probabilities = softmax_probability(out.soft_labels, oil_class_index(class_names)) if out.soft_labels is not None else None
    grid = np.asarray(triplet_grid(out.images[..., 0], out.masks, probabilities))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples", grid, step, dataformats="HWC")
    if was_training:
        model.train()
    if ema is not None:
        ema.restore(model.parameters())
