"""The balancing factor b of a run: `--balancing_factor` and `--balance_resolution` resolved into one `Balance`.

The spellings: `auto` (the SNR value on the training split, Eq. 9 in `dakter_hf/data/balance.py`),
`none` (b = 1), `inherit` (stage 2 keeps stage 1's b), a number, and `default` (inherit with
`--init_from`, else auto). `balancing_choice` is the one place that reads `default`; the joint
training and the experiment plan both ask it. `balance_arguments` turns a b back into those two
flags, so a b computed once (the experiment's balance step) is handed to training as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from dakter_hf.data.balance import BalanceStats, compute_balance_stats


@dataclass(frozen=True)
class Balance:
    """b, how it was obtained (for the model card) and the resolution it was computed at (None: native or unknown)."""

    b: float
    how: str
    resolution: Optional[int] = None


def balance_arguments(b: float, resolution: Optional[int]) -> Dict[str, str]:
    """`balancing_factor` / `balance_resolution` values that give training this b (exactly) and its resolution."""
    return {
        "balancing_factor": repr(float(b)),
        "balance_resolution": "native" if resolution is None else str(resolution),
    }


def balancing_choice(balancing_factor: Any, init_from: Optional[str]) -> str:
    """`--balancing_factor` in lower case, with `default` made explicit: `inherit` with `--init_from`, else `auto`."""
    choice = str(balancing_factor).lower()
    if choice == "default":
        return "inherit" if init_from else "auto"
    return choice


def balance_resolution_of(balance_resolution: Optional[str], resolution: int) -> Optional[int]:
    """--balance_resolution as pixels: 'train' -> the training resolution, 'native'/None -> None (native size)."""
    if balance_resolution == "train":
        return resolution
    if balance_resolution in (None, "native"):
        return None
    return int(balance_resolution)


def _where(resolution: Optional[int]) -> str:
    return "native size" if resolution is None else f"{resolution} px"


def snr_balance(train_split, resolution: Optional[int], show_progress: bool = True) -> Tuple[Balance, BalanceStats]:
    """The SNR value b on the training split at `resolution` (None: native size), and its statistics."""
    stats = compute_balance_stats(train_split, resolution=resolution, show_progress=show_progress)
    return Balance(
        stats.b, f"SNR value on {stats.num_images} training images at {_where(resolution)}", resolution
    ), stats


def resolve_balancing_factor(args, train_split, init_pipeline, show_progress: bool = True) -> Balance:
    """The run's b from `args.balancing_factor` / `args.balance_resolution` (a `JointTrainingArguments`).

    `init_pipeline` is the loaded `--init_from` pipeline (or None); `train_split` is read only for `auto`.
    """
    choice = balancing_choice(args.balancing_factor, args.init_from)
    if choice == "inherit":
        if init_pipeline is None:
            raise ValueError("--balancing_factor inherit needs --init_from")
        config = init_pipeline.config
        return Balance(float(config.balancing_factor), f"inherited from {args.init_from}", config.balance_resolution)
    if choice == "none":
        return Balance(1.0, "none (b = 1)")
    if choice == "auto":
        return snr_balance(
            train_split, balance_resolution_of(args.balance_resolution, args.resolution), show_progress
        )[0]
    try:
        value = float(choice)
    except ValueError:
        raise ValueError(f"--balancing_factor must be auto, none, inherit or a number, got {choice!r}") from None
    if not value > 0:
        raise ValueError(f"--balancing_factor must be > 0, got {value}")
    if args.balance_resolution in (None, "train"):  # a bare number: where it was computed is not known
        return Balance(value, "given")
    resolution = balance_resolution_of(args.balance_resolution, args.resolution)
    return Balance(value, f"given, computed at {_where(resolution)}", resolution)
