"""dakter-hf: DAKTer (diffusion-based data augmentation with generated soft labels) on Hugging Face."""

__version__ = "0.1.0"

from dakter_hf.utils.lazy import lazy_exports


_EXPORTS = {
    "balancing_factor": "dakter_hf.data.balance",
    "compute_balance_stats": "dakter_hf.data.balance",
    "mean_power": "dakter_hf.data.balance",
    "DAKTerPipeline": "dakter_hf.pipelines.pipeline_dakter",
    "DAKTerPipelineOutput": "dakter_hf.pipelines.pipeline_dakter",
    "DAKTerObjective": "dakter_hf.joint.objective",
}
__all__ = sorted(_EXPORTS) + ["__version__"]
__getattr__ = lazy_exports(__name__, _EXPORTS)  # torch, diffusers and datasets load on first use

from dakter_hf import _moved


_moved.install()  # old module paths (dakter_hf.train_joint, dakter_hf.generate, ...) warn and forward
