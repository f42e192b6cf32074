"""DeepLabV3+ (Chen et al. 2018, ASPP + low-level skip) as a transformers ``PreTrainedModel``.

Built on transformers' own ResNet backbone with random init, because segmentation-models-pytorch/timm
need torchvision, whose wheel does not work with our CPU torch.

This file and its relative import ``remote_code.py`` are self-contained (torch + transformers only):
``save_pretrained`` copies both next to the weights, so a checkpoint loads with plain transformers and
``trust_remote_code=True``.
"""

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoBackbone, AutoConfig, PretrainedConfig, ResNetConfig
from transformers.configuration_utils import SubConfigSpec

# Relative on purpose: save_pretrained copies a modelling file's relative imports next to it (see remote_code.py).
from .remote_code import SegmenterModel, check_channels, init_head, label_kwargs, model_output, own_loss, register


# ResNet layouts for `deeplabv3plus_config`. Stem + stage1 give stride 4, each later stage halves again.
_RESNETS = {
    "resnet18": {
        "layer_type": "basic",
        "embedding_size": 64,
        "hidden_sizes": [64, 128, 256, 512],
        "depths": [2, 2, 2, 2],
    },
    "resnet50": {
        "layer_type": "bottleneck",
        "embedding_size": 64,
        "hidden_sizes": [256, 512, 1024, 2048],
        "depths": [3, 4, 6, 3],
    },
}


def _resnet_kwargs(backbone="resnet18", num_channels=1, output_stride=16):
    """ResNetConfig kwargs: low-level feature = stage1 (stride 4), high-level = last stage kept.

    transformers' ResNet cannot dilate, and ResNetBackbone runs every stage whether or not it is an
    output, so output_stride=16 (the paper's choice) drops stage4 instead of computing it and throwing it
    away (for ResNet-18 that is 8.4M of 11.2M backbone weights). output_stride=32 keeps stage4.
    """
    if backbone not in _RESNETS:
        raise ValueError(f"backbone must be one of {sorted(_RESNETS)}, got {backbone!r}")
    if output_stride not in (16, 32):
        raise ValueError(f"output_stride must be 16 or 32, got {output_stride}")
    kwargs = dict(_RESNETS[backbone], num_channels=num_channels)
    n = 3 if output_stride == 16 else 4
    kwargs["hidden_sizes"] = kwargs["hidden_sizes"][:n]
    kwargs["depths"] = kwargs["depths"][:n]
    kwargs["out_features"] = ["stage1", f"stage{n}"]
    return kwargs


class DeepLabV3PlusConfig(PretrainedConfig):
    """Config of `DeepLabV3PlusForSemanticSegmentation`.

    backbone_config: a ResNetConfig (or its dict). Its first out_feature is the low-level skip (must be
        stride 4, so logits come out at H/4), its last the ASPP input (stride 16 = output stride 16).
        Default: ResNet-18 truncated after stage3, ``num_channels`` input channels.
    num_channels: input channels (1 for grey SAR); must equal backbone_config.num_channels.
    aspp_channels: width of every ASPP branch and of its projection.
    atrous_rates: dilations of the three 3x3 ASPP branches, in pixels of the stride-16 map. The paper's
        (6, 12, 18) suits 512 px crops; at 128 px the map is 8x8, so use small rates such as (2, 4, 6)
        (a rate >= the map size only sees zero padding around the centre tap).
    low_level_channels: the low-level skip is reduced to this many channels (48 in the paper) so it
        does not drown the ASPP features in the concat.
    decoder_channels: width of the two 3x3 decoder convs.
    dropout: dropout after the ASPP projection.
    semantic_loss_ignore_index: label value the loss ignores.
    num_labels / id2label / label2id: the usual PretrainedConfig kwargs.
    """

    model_type = "dakter_deeplabv3plus"
    # Same pattern as UperNetConfig: a dict backbone_config (from config.json) becomes a ResNetConfig.
    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="resnet", init_kwargs=_resnet_kwargs()),
    }

    backbone_config: dict | PretrainedConfig | None = None
    num_channels: int = 1
    aspp_channels: int = 256
    atrous_rates: list[int] | tuple[int, ...] = (6, 12, 18)
    low_level_channels: int = 48
    decoder_channels: int = 256
    dropout: float = 0.1
    semantic_loss_ignore_index: int = 255

    def __post_init__(self, **kwargs):
        if self.backbone_config is None:  # default backbone, but with our input channel count
            self.backbone_config = ResNetConfig(**_resnet_kwargs(num_channels=self.num_channels))
        super().__post_init__(**kwargs)
        self.atrous_rates = list(self.atrous_rates)
        check_channels(self)
        if len(self.backbone_config.out_features) < 2:
            raise ValueError("backbone_config needs two out_features: low-level (stride 4) and high-level")


def deeplabv3plus_config(
    num_labels, id2label=None, num_channels=1, backbone="resnet18", atrous_rates=(6, 12, 18), output_stride=16
) -> DeepLabV3PlusConfig:
    """A DeepLabV3+ config on a "resnet18" (basic blocks) or "resnet50" (bottleneck) backbone.

    output_stride=16 truncates the ResNet after stage3 (see `_resnet_kwargs`); 32 keeps stage4.
    """
    return DeepLabV3PlusConfig(
        backbone_config=ResNetConfig(**_resnet_kwargs(backbone, num_channels, output_stride)),
        num_channels=num_channels,
        atrous_rates=list(atrous_rates),
        **label_kwargs(num_labels, id2label),
    )


class _ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels, out_channels, kernel_size=1, dilation=1):
        padding = dilation * (kernel_size // 2)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class _ASPPPooling(nn.Module):
    """Image-level branch. No BatchNorm: on a 1x1 map BN fails in training at batch size 1."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        pooled = F.relu(self.conv(x.mean(dim=(2, 3), keepdim=True)))
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class DeepLabV3PlusASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3, image pooling; concat, 1x1 project."""

    def __init__(self, in_channels, channels, rates, dropout):
        super().__init__()
        self.convs = nn.ModuleList(
            [_ConvBNReLU(in_channels, channels, 1)] + [_ConvBNReLU(in_channels, channels, 3, r) for r in rates]
        )
        self.pooling = _ASPPPooling(in_channels, channels)
        self.project = _ConvBNReLU(channels * (len(rates) + 2), channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        branches = [conv(x) for conv in self.convs] + [self.pooling(x)]
        return self.dropout(self.project(torch.cat(branches, dim=1)))


class DeepLabV3PlusDecoder(nn.Module):
    """Upsample ASPP output to the low-level map, concat the reduced skip, refine, classify."""

    def __init__(self, low_in_channels, config):
        super().__init__()
        self.reduce = _ConvBNReLU(low_in_channels, config.low_level_channels, 1)
        self.fuse = nn.Sequential(
            _ConvBNReLU(config.aspp_channels + config.low_level_channels, config.decoder_channels, 3),
            _ConvBNReLU(config.decoder_channels, config.decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(config.decoder_channels, config.num_labels, 1)

    def forward(self, aspp_features, low_level):
        low_level = self.reduce(low_level)
        up = F.interpolate(aspp_features, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([up, low_level], dim=1)))


class DeepLabV3PlusForSemanticSegmentation(SegmenterModel):
    """DeepLabV3+ on an AutoBackbone. Logits are at the low-level resolution (H/4); callers upsample."""

    config_class = DeepLabV3PlusConfig
    config: DeepLabV3PlusConfig
    base_model_prefix = "deeplab"

    def __init__(self, config: DeepLabV3PlusConfig):
        super().__init__(config)
        self.backbone = AutoBackbone.from_config(config.backbone_config)
        channels = self.backbone.channels
        self.aspp = DeepLabV3PlusASPP(channels[-1], config.aspp_channels, config.atrous_rates, config.dropout)
        self.decoder = DeepLabV3PlusDecoder(channels[0], config)
        self.post_init()

    def _init_weights(self, module):
        # The backbone is a PreTrainedModel and initialises itself; this covers the ASPP and decoder.
        # (fan_out kaiming on the classifier, with ~2 outputs, would give logits of std ~10, start loss ~6.)
        init_head(module, self.decoder.classifier, convs=(nn.Conv2d,))

    def forward(self, pixel_values, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        """labels: (B, H, W) class ids; loss is computed on logits upsampled to the label size."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.backbone(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        features = outputs.feature_maps
        logits = self.decoder(self.aspp(features[-1]), features[0])

        loss = None
        if labels is not None:
            upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
            loss = own_loss(upsampled, labels, self.config)
        return model_output(loss, logits, outputs.hidden_states, return_dict)


# The auto classes resolve "dakter_deeplabv3plus" once this module is imported; save_pretrained writes auto_map.
register("dakter_deeplabv3plus", DeepLabV3PlusConfig, DeepLabV3PlusForSemanticSegmentation)
