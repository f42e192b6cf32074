"""dakter-hf: DAKTer (diffusion-based data augmentation with generated soft labels) on Hugging Face."""

__version__ = "0.1.0"

from .balance import balancing_factor, compute_balance_stats, mean_power

__all__ = ["balancing_factor", "compute_balance_stats", "mean_power", "DAKTerPipeline", "DAKTerPipelineOutput", "DAKTerObjective", "__version__"]


def __getattr__(name):
    # torch/diffusers load only when the pipeline or the objective is asked for
    if name in ("DAKTerPipeline", "DAKTerPipelineOutput"):
        from .pipelines import pipeline_dakter

        return getattr(pipeline_dakter, name)
    if name == "DAKTerObjective":
        from .objective import DAKTerObjective

        return DAKTerObjective
    raise AttributeError(f"module 'dakter_hf' has no attribute {name!r}")
