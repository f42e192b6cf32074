"""Fair A/B timing for the benchmarks: warm-up, then alternating rounds, medians compared."""

import contextlib
import statistics
import time
from typing import Callable, Dict, List

import torch

from dakter_hf.joint.speed import adamw


def seconds(work: Callable[[], None], device: str) -> float:
    """Wall time of one call, with the device queue drained on both sides."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    work()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def alternate(candidates: Dict[str, Callable[[], None]], rounds: int, device: str) -> Dict[str, List[float]]:
    """Seconds per round for each candidate; rounds alternate so background load hits all alike."""
    for work in candidates.values():  # warm-up
        seconds(work, device)
    times: Dict[str, List[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, work in candidates.items():
            times[name].append(seconds(work, device))
    return times


def median(values: List[float]) -> float:
    return statistics.median(values)


def step_optimizer(params, device: str, fused: bool):
    """AdamW at lr 1e-5: the fused one that training uses on CUDA, or torch's own (foreach on CUDA)."""
    if fused:
        return adamw(params, device, lr=1e-5)
    return torch.optim.AdamW(params, lr=1e-5, foreach=True if device.startswith("cuda") else None)


def autocast_context(device: str, dtype) -> Callable:
    """A no-argument context factory: autocast to `dtype` on `device`, or nothing when `dtype` is None."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def dakter_step(objective, unet, images, masks, optimizer, context=contextlib.nullcontext) -> Callable[[], None]:
    """One training step on a fixed batch: the DAKTer loss (forward under `context()`), backward, AdamW step."""

    def step():
        with context():
            out = objective(unet, images, masks)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
