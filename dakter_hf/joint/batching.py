"""Data order of the joint training: which rows, noise, timesteps and augmentations each micro-batch gets.

Reproducibility: the data order of epoch e comes from (seed, e), and the noise, timesteps
and augmentations of micro-batch k from (seed, k, process). Nothing depends on hidden RNG
state, so a run resumed from a checkpoint continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
from typing import Dict

import torch

from dakter_hf.data.decoded import BatchStream, DecodedPairs, DeviceAugment, split_cache_key
from dakter_hf.data.transforms import collate_pairs, pair_to_tensors, random_dihedral
from dakter_hf.joint.arguments import JointTrainingArguments
from dakter_hf.joint.objective import DAKTerObjective


logger = logging.getLogger(__name__)


def epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_items, generator=generator)


class BatchPlan:
    """This process's share of global micro-batch k, for k = start, start + 1, ...

    Epoch e is the permutation drawn from (seed, e) (the last partial batch is
    dropped); process p takes rows [p * batch, (p + 1) * batch) of each global batch.
    Used as a DataLoader `batch_sampler`, so worker processes can decode ahead.
    """

    def __init__(
        self, num_items: int, batch_size: int, num_processes: int, process_index: int, seed: int, start: int = 0
    ):
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


def micro_batches(
    args: JointTrainingArguments,
    train_split,
    plan: BatchPlan,
    accelerator,
    objective: DAKTerObjective,
    first_micro_step: int = 0,
):
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
        loader = iter(
            torch.utils.data.DataLoader(
                ResizedPairs(train_split, args.resolution),
                batch_sampler=plan,
                collate_fn=collate_pairs,
                num_workers=args.dataloader_num_workers,
            )
        )
        return _loader_micro_batches(loader, args, objective, device, process, first_micro_step)
    cache_dir = os.path.join(args.output_dir, "data_cache")
    with accelerator.main_process_first():  # a memory-mapped cache is written once, by the main process
        key = split_cache_key(train_split, args.data, args.sensor, args.split, args.classes, args.num_classes)
        decoded = DecodedPairs.from_split(
            train_split,
            args.resolution,
            mode=args.data_cache,
            cache_dir=cache_dir,
            key=key,
            show_progress=accelerator.is_local_main_process,
        )
    logger.info(
        "decoded %d training pairs once at %d px (%.1f MB of uint8)",
        len(decoded),
        args.resolution,
        decoded.nbytes / 2**20,
    )
    stream = BatchStream(
        decoded,
        plan,
        lambda k: step_generator(args.seed, k, process),
        first_micro_step,
        args.augment,
        num_timesteps,
        objective.channels,
        pin_memory=device.type == "cuda",
        background=device.type == "cuda",
    )
    return _stream_micro_batches(stream, DeviceAugment(args.resolution, device), device)


def _loader_micro_batches(
    loader, args: JointTrainingArguments, objective: DAKTerObjective, device, process: int, micro_step: int
):
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


def _augmented(batch: Dict[str, torch.Tensor], augment: bool, generator: torch.Generator):
    """Per-sample dihedral transforms drawn from this micro-batch's generator."""
    images, masks = batch["images"], batch["masks"]
    if not augment:
        return images, masks
    pairs = [random_dihedral(image, mask, generator) for image, mask in zip(images, masks)]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
