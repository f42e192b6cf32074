"""Decode once: the resized training split as uint8 tensors, batches assembled on the device.

`ResizedPairs` decodes a JPEG/PNG row from Arrow and resizes it on every step; on a GPU
that costs more than the step itself. `DecodedPairs` does it once: image and mask of
every row at the training resolution, as (N, R, R) uint8 arrays, in memory or (for
large sets) in a memory-mapped `.npy` file, reused when a run resumes. A batch is then
an index into those arrays, a 256-entry lookup to [-1, 1] floats and one gather that
applies each sample's flip / rot90, on the training device.

The batches are exactly those of `ResizedPairs` + `joint.batching._augmented` for the same
seed and step: the same uint8 pixels (the same PIL resize), the same float conversion
(`x / 127.5 - 1` in float64, then float32: a lookup table holds the 256 values), and the
same per-sample dihedral draws from the micro-batch's generator, in the same order,
before its timesteps and noise.

`BatchStream` prepares micro-batch k + 1 (indices, dihedral draws, timesteps, noise, the
uint8 rows; pinned on CUDA) in a background thread while step k runs on a GPU; on a CPU,
where that thread would only compete with the step for the cores, it prepares it in turn.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from dakter_hf.data.arrays import resize_pair, to_grey_array
from dakter_hf.data.transforms import dihedral, draw_dihedral
from dakter_hf.utils.files import atomic_path


logger = logging.getLogger(__name__)

DATA_CACHE_CHOICES = ("auto", "memory", "mmap", "none")
MEMORY_LIMIT_BYTES = 2 << 30  # `auto`: a set larger than this (images + masks) goes to a memory-mapped file


def unit_range_table(device=None) -> torch.Tensor:
    """The 256 float32 values of `image_to_unit_range` (x / 127.5 - 1 in float64, then float32)."""
    return (torch.arange(256, dtype=torch.float64) / 127.5 - 1.0).to(torch.float32).to(device)


def decode_pair(image, mask, resolution: int) -> Tuple[np.ndarray, np.ndarray]:
    """One row at `resolution`: (R, R) uint8 grey image and (R, R) uint8 class ids (as `pair_to_tensors`)."""
    image, mask = resize_pair(image, mask, resolution)
    grey, ids = to_grey_array(image), to_grey_array(mask)
    if grey.dtype != np.uint8:
        raise ValueError(f"decode-once needs 8-bit grey images, got {grey.dtype}; use --data_cache none")
    if ids.dtype != np.uint8:
        if ids.min() < 0 or ids.max() > 255:
            raise ValueError("decode-once stores class ids as uint8; use --data_cache none")
        ids = ids.astype(np.uint8)
    return grey, ids


class DecodedPairs:
    """A split's image/mask pairs decoded and resized once: `images`, `masks` (N, R, R) uint8."""

    def __init__(self, images, masks):
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes + self.masks.nbytes)

    @classmethod
    def from_split(
        cls,
        split,
        resolution: int,
        mode: str = "auto",
        cache_dir: Optional[str] = None,
        key: str = "",
        show_progress: bool = False,
    ) -> "DecodedPairs":
        """Decode `split` (columns image, mask) at `resolution`.

        mode: `memory`, `mmap` (a `.npy` pair under `cache_dir`, reused when it exists), or
        `auto` (memory up to MEMORY_LIMIT_BYTES, else mmap when `cache_dir` is given).
        """
        if mode not in DATA_CACHE_CHOICES or mode == "none":
            raise ValueError(f"mode must be auto, memory or mmap, got {mode!r}")
        count, shape = len(split), (len(split), resolution, resolution)
        if mode == "auto":
            mode = "mmap" if (cache_dir and 2 * count * resolution * resolution > MEMORY_LIMIT_BYTES) else "memory"
        if mode == "mmap":
            if not cache_dir:
                raise ValueError("a memory-mapped data cache needs a cache folder")
            stem = os.path.join(cache_dir, f"decoded-{resolution}px-{count}-{key or 'split'}")
            paths = (stem + "-images.npy", stem + "-masks.npy")
            if all(os.path.isfile(p) for p in paths):
                logger.info("reusing the decoded training set %s-*.npy", stem)
                return cls(*(np.load(p, mmap_mode="r") for p in paths))
            os.makedirs(cache_dir, exist_ok=True)
            with atomic_path(paths[0]) as image_file, atomic_path(paths[1]) as mask_file:  # both, or neither
                images = np.lib.format.open_memmap(image_file, mode="w+", dtype=np.uint8, shape=shape)
                masks = np.lib.format.open_memmap(mask_file, mode="w+", dtype=np.uint8, shape=shape)
                _decode_into(split, images, masks, resolution, show_progress)
                images.flush(), masks.flush()
                del images, masks
            return cls(*(np.load(p, mmap_mode="r") for p in paths))
        images, masks = np.empty(shape, np.uint8), np.empty(shape, np.uint8)
        _decode_into(split, images, masks, resolution, show_progress)
        return cls(images, masks)

    def rows(self, indices: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, R, R) images and masks of these rows (a copy; CPU)."""
        order = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(self.images[order])), torch.from_numpy(
            np.ascontiguousarray(self.masks[order])
        )


def _decode_into(split, images: np.ndarray, masks: np.ndarray, resolution: int, show_progress: bool) -> None:
    rows = split.select_columns(["image", "mask"])
    iterator = range(len(split))
    if show_progress:
        iterator = tqdm(iterator, desc=f"decoding {len(split)} pairs at {resolution} px once")
    for index in iterator:
        row = rows[index]
        images[index], masks[index] = decode_pair(row["image"], row["mask"], resolution)


def split_cache_key(split, *parts) -> str:
    """A short key naming a split and the options it was decoded with (for the mmap file names)."""
    fingerprint = getattr(split, "_fingerprint", None) or ""
    return hashlib.sha1("|".join(map(str, (fingerprint, *parts))).encode()).hexdigest()[:12]


# --------------------------------------------------------------------- augmentation
def dihedral_draws(batch_size: int, generator: torch.Generator) -> List[int]:
    """Per sample, the draws of `transforms.random_dihedral` in its order: k (rot90), then flip.

    Returns codes 2 * k + flip (0..7)."""
    codes = []
    for _ in range(batch_size):
        k, flip = draw_dihedral(generator)
        codes.append(2 * k + int(flip))
    return codes


def dihedral_index_maps(size: int, device=None) -> torch.Tensor:
    """(8, R*R) int64: for code 2k + flip, the source pixel of each output pixel (flip, then rot90 k)."""
    grid = torch.arange(size * size).view(size, size)
    maps = []
    for k in range(4):
        for flip in (False, True):
            maps.append(dihedral(grid, k, flip).reshape(-1))
    return torch.stack(maps).to(device)


class DeviceAugment:
    """uint8 batches -> ([-1, 1] float32 (B, 1, R, R), int64 (B, R, R)) with per-sample flips/rot90, on `device`."""

    def __init__(self, size: int, device):
        self.size, self.device = size, torch.device(device)
        self.table = unit_range_table(self.device)
        self.maps = dihedral_index_maps(size, self.device)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor, codes: Optional[torch.Tensor]):
        batch, size = images.shape[0], self.size
        images = images.to(self.device, non_blocking=True).view(batch, size * size)
        masks = masks.to(self.device, non_blocking=True).view(batch, size * size)
        if codes is not None:
            index = self.maps[codes.to(self.device, non_blocking=True)]
            images, masks = images.gather(1, index), masks.gather(1, index)
        floats = self.table[images.long()].view(batch, 1, size, size)
        return floats, masks.long().view(batch, size, size)


# --------------------------------------------------------------------- the stream
@dataclass
class MicroBatch:
    images: torch.Tensor  # uint8 (B, R, R), CPU (pinned on CUDA)
    masks: torch.Tensor
    codes: Optional[torch.Tensor]  # int64 (B,) dihedral codes, None without augmentation
    timesteps: torch.Tensor
    noise: torch.Tensor


class BatchStream:
    """Micro-batches k = start, start + 1, ... prepared one step ahead in a background thread.

    `plan` yields the row indices of each micro-batch (`joint.batching.BatchPlan`);
    `make_generator(k)` the micro-batch's generator, from which the dihedral draws, then
    the timesteps, then the noise are drawn, as in the DataLoader path.
    """

    def __init__(
        self,
        decoded: DecodedPairs,
        plan,
        make_generator: Callable[[int], torch.Generator],
        start: int,
        augment: bool,
        num_train_timesteps: int,
        channels: int,
        pin_memory: bool = False,
        prefetch: int = 2,
        background: bool = True,
    ):
        self.decoded, self.plan, self.make_generator = decoded, plan, make_generator
        self.start, self.augment, self.num_train_timesteps, self.channels = (
            start,
            augment,
            num_train_timesteps,
            channels,
        )
        self.pin_memory = pin_memory
        self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, prefetch))
        self._stop = threading.Event()
        self._thread = None
        if background:
            self._thread = threading.Thread(target=self._work, name="dakter-batches", daemon=True)
            self._thread.start()
        else:
            self._steps = enumerate(self.plan, start=self.start)

    def prepare(self, step: int, indices: List[int]) -> MicroBatch:
        generator = self.make_generator(step)
        images, masks = self.decoded.rows(indices)
        batch = len(indices)
        codes = torch.tensor(dihedral_draws(batch, generator), dtype=torch.int64) if self.augment else None
        timesteps = torch.randint(0, self.num_train_timesteps, (batch,), generator=generator)
        noise = torch.randn((batch, self.channels, *images.shape[1:]), generator=generator)
        if self.pin_memory:
            images, masks, noise = images.pin_memory(), masks.pin_memory(), noise.pin_memory()
        return MicroBatch(images, masks, codes, timesteps, noise)

    def _work(self) -> None:
        try:
            for step, indices in enumerate(self.plan, start=self.start):
                item = self.prepare(step, indices)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as error:  # surfaces in the training thread
            self._queue.put(error)

    def __iter__(self) -> Iterator[MicroBatch]:
        return self

    def __next__(self) -> MicroBatch:
        if self._thread is None:
            step, indices = next(self._steps)
            return self.prepare(step, indices)
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is None:
            return
        while not self._queue.empty():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)
