"""dakter-hf: DAKTer (diffusion-based data augmentation with generated soft labels) on Hugging Face."""

__version__ = "0.1.0"

from .balance import balancing_factor, compute_balance_stats, mean_power

__all__ = ["balancing_factor", "compute_balance_stats", "mean_power", "__version__"]
