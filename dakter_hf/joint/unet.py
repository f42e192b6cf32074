"""Joint UNet presets: a diffusers UNet2DModel with 1 image + K label channels in and out."""

from __future__ import annotations

from typing import Any, Dict, Optional

from diffusers import UNet2DModel

from dakter_hf.pipelines.pipeline_dakter import num_label_channels


UNET_PRESETS: Dict[str, Dict[str, Any]] = {
    # tests: seconds on a CPU at 16-32 px
    "tiny": {
        "sample_size": 32,
        "block_out_channels": (16, 32),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 8,
        "attention_head_dim": 8,
    },
    # CPU experiments at 64 px
    "small": {
        "sample_size": 64,
        "block_out_channels": (32, 64, 128, 128),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "norm_num_groups": 32,
        "attention_head_dim": 32,
    },
    # GPU, the paper's scale (DDPM 256 px layout, attention at 16 x 16)
    "paper": {
        "sample_size": 256,
        "block_out_channels": (128, 128, 256, 256, 512, 512),
        "layers_per_block": 2,
        "down_block_types": (
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "AttnDownBlock2D",
            "DownBlock2D",
        ),
        "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        "attention_head_dim": 64,
    },
}


def make_joint_unet(
    num_classes: int,
    preset: str = "small",
    sample_size: Optional[int] = None,
    label_encoding: str = "onehot",
    **overrides: Any,
) -> UNet2DModel:
    """Build a joint UNet from a named preset (`tiny`, `small`, `paper`) or overrides.

    in/out channels are always 1 + the label channels; any other UNet2DModel config
    key can be overridden.
    """
    if preset not in UNET_PRESETS:
        raise ValueError(f"unknown UNet preset {preset!r}; choose one of {sorted(UNET_PRESETS)}")
    config = dict(UNET_PRESETS[preset])
    config.update(overrides)
    if sample_size is not None:
        config["sample_size"] = sample_size
    channels = 1 + num_label_channels(num_classes, label_encoding)
    config["in_channels"] = config["out_channels"] = channels
    return UNet2DModel(**config)
