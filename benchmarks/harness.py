"""Fair A/B timing for the benchmarks: warm-up, then alternating rounds, medians compared."""

import statistics
import time
from typing import Callable, Dict, List

import torch


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
