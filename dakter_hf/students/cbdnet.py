"""CBD-Net (Zhu et al., TGRS 2022), the SOS authors' oil-spill network, as a transformers ``PreTrainedModel``.

A D-LinkNet-style encoder-decoder:

* a ResNet-34 encoder (transformers' ``ResNetModel``: basic blocks, depths 3-4-6-3, widths 64-512)
  with scSE attention (channel squeeze-excitation + spatial squeeze-excitation, summed) after each
  stage; the attended map is what the next stage reads and what the decoder skip adds;
* D-LinkNet's centre block on the stride-32 map: four cascaded 3x3 convolutions dilated 1, 2, 4, 8,
  whose outputs are summed with the input;
* a LinkNet decoder: per stage 1x1 reduce to a quarter, 3x3 transposed conv x2, 1x1 expand, each with
  BatchNorm + ReLU, and the encoder map of that stride *added*; then a 4x4 transposed conv x2, two 3x3
  convs, and per-pixel class logits at the input size.

Built from the published architecture (``CUG-URS/Marine-Oil-Spill-Detection-Network-CBDNet``), with two
differences: C softmax logits instead of one sigmoid channel (so KD applies), and random init of the
encoder by default (the reference loads torchvision's ImageNet ResNet-34; here ``--student_weights`` may
name a transformers ResNet checkpoint, see ``load_resnet_encoder``). The boundary-supervised loss lives in
``dakter_hf.students.losses`` (``boundary_loss``).

Like ``deeplabv3plus.py``, this file needs nothing but torch, transformers and ``remote_code.py`` (a relative
import, which ``save_pretrained`` copies beside it): a saved checkpoint loads with ``trust_remote_code=True``.
"""

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, PretrainedConfig, ResNetConfig, ResNetModel
from transformers.configuration_utils import SubConfigSpec

# Relative on purpose: save_pretrained copies a modelling file's relative imports next to it (see remote_code.py).
from .remote_code import SegmenterModel, check_channels, init_head, label_kwargs, model_output, own_loss, register


# ResNet-34 (He et al. 2016, Table 1): the reference's torchvision resnet34 in transformers' terms.
RESNET34 = {"layer_type": "basic", "embedding_size": 64, "hidden_sizes": [64, 128, 256, 512], "depths": [3, 4, 6, 3]}


def resnet34_kwargs(num_channels=1, **overrides):
    """ResNetConfig kwargs of a ResNet-34 taking `num_channels` input channels (stem stride 4, then x2 per stage)."""
    return {**RESNET34, "num_channels": num_channels, "downsample_in_first_stage": False, **overrides}


class CBDNetConfig(PretrainedConfig):
    """Config of `CBDNetForSemanticSegmentation`.

    backbone_config: a ResNetConfig (or its dict) with basic or bottleneck layers; every stage is used.
        Default: ResNet-34 with ``num_channels`` input channels.
    num_channels: input channels (1 for grey SAR); must equal backbone_config.num_channels.
    dilations: the centre block's cascade (the reference's 1, 2, 4, 8). At 128 px input the stride-32 map
        is 4 x 4, so dilations >= 4 see mostly zero padding there (as 8 already does at the reference's 256 px).
    final_channels: width of the last transposed conv and 3x3 conv (32 in the reference).
    semantic_loss_ignore_index: label value the model's own CE loss ignores.
    num_labels / id2label / label2id: the usual PretrainedConfig kwargs.
    """

    model_type = "dakter_cbdnet"
    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="resnet", init_kwargs=resnet34_kwargs()),
    }

    backbone_config: dict | PretrainedConfig | None = None
    num_channels: int = 1
    dilations: list[int] | tuple[int, ...] = (1, 2, 4, 8)
    final_channels: int = 32
    semantic_loss_ignore_index: int = 255

    def __post_init__(self, **kwargs):
        if self.backbone_config is None:  # ResNet-34 with our input channel count
            self.backbone_config = ResNetConfig(**resnet34_kwargs(self.num_channels))
        super().__post_init__(**kwargs)
        self.dilations = list(self.dilations)
        check_channels(self)
        if len(self.backbone_config.hidden_sizes) < 2:
            raise ValueError("backbone_config needs at least two stages")
        if getattr(self.backbone_config, "downsample_in_first_stage", False):
            raise ValueError("backbone_config.downsample_in_first_stage must be false (stage 1 at stride 4)")


def cbdnet_config(num_labels, id2label=None, num_channels=1, backbone=None, **kwargs) -> CBDNetConfig:
    """A CBD-Net config on a ResNet-34 with `num_channels` inputs; `backbone` overrides ResNetConfig fields."""
    resnet = ResNetConfig(**resnet34_kwargs(num_channels, **(backbone or {})))
    return CBDNetConfig(
        backbone_config=resnet, num_channels=num_channels, **label_kwargs(num_labels, id2label), **kwargs
    )


class ChannelSqueezeExcitation(nn.Module):
    """cSE: global average pool, 1x1 to C/2, 1x1 back to C, sigmoid; rescales the channels."""

    def __init__(self, channels):
        super().__init__()
        self.squeeze = nn.Conv2d(channels, max(1, channels // 2), 1, bias=False)
        self.excite = nn.Conv2d(max(1, channels // 2), channels, 1, bias=False)

    def forward(self, x):
        return x * torch.sigmoid(self.excite(self.squeeze(x.mean(dim=(2, 3), keepdim=True))))


class SpatialSqueezeExcitation(nn.Module):
    """sSE: 1x1 to one channel, sigmoid; rescales the pixels."""

    def __init__(self, channels):
        super().__init__()
        self.squeeze = nn.Conv2d(channels, 1, 1, bias=False)

    def forward(self, x):
        return x * torch.sigmoid(self.squeeze(x))


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze-excitation (Roy et al. 2018): cSE(x) + sSE(x)."""

    def __init__(self, channels):
        super().__init__()
        self.channel = ChannelSqueezeExcitation(channels)
        self.spatial = SpatialSqueezeExcitation(channels)

    def forward(self, x):
        return self.channel(x) + self.spatial(x)


class DilatedCentre(nn.Module):
    """D-LinkNet's centre: cascaded dilated 3x3 convs (with bias, ReLU); x plus every cascade output."""

    def __init__(self, channels, dilations):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=d, dilation=d) for d in dilations)

    def forward(self, x):
        out, h = x, x
        for conv in self.convs:
            h = F.relu(conv(h))
            out = out + h
        return out


def _conv_bn_relu(conv, channels):
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class LinkNetDecoderBlock(nn.Module):
    """1x1 to in/4, 3x3 transposed conv (stride 2), 1x1 to `out_channels`; BatchNorm + ReLU after each."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid = max(1, in_channels // 4)
        self.reduce = _conv_bn_relu(nn.Conv2d(in_channels, mid, 1), mid)
        self.upsample = _conv_bn_relu(nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1), mid)
        self.expand = _conv_bn_relu(nn.Conv2d(mid, out_channels, 1), out_channels)

    def forward(self, x):
        return self.expand(self.upsample(self.reduce(x)))


def _match(x, reference):
    """Resize `x` to the spatial size of `reference` when they differ (inputs not a multiple of 32)."""
    if x.shape[-2:] == reference.shape[-2:]:
        return x
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


class CBDNetForSemanticSegmentation(SegmenterModel):
    """CBD-Net. Logits come at the input resolution (the labels' size when images and masks match)."""

    config_class = CBDNetConfig
    config: CBDNetConfig
    base_model_prefix = "cbdnet"

    def __init__(self, config: CBDNetConfig):
        super().__init__(config)
        # `resnet.` keys are those of transformers' ResNetForImageClassification checkpoints
        self.resnet = ResNetModel(config.backbone_config)
        sizes = list(config.backbone_config.hidden_sizes)
        self.attention = nn.ModuleList(SCSE(c) for c in sizes)
        self.centre = DilatedCentre(sizes[-1], config.dilations)
        # decoders[i] takes stage i+1's width to stage i's (the last one to stage 1's, at stride 2)
        self.decoders = nn.ModuleList(LinkNetDecoderBlock(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1))
        self.decoders.append(LinkNetDecoderBlock(sizes[0], sizes[0]))
        final = config.final_channels
        self.head = nn.Sequential(
            nn.ConvTranspose2d(sizes[0], final, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(final, final, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(final, config.num_labels, 3, padding=1)
        self.post_init()

    def _init_weights(self, module):
        # The ResNet is a PreTrainedModel and initialises itself (kaiming fan_out, BN identity); this covers
        # the attention, centre and decoder.
        init_head(module, self.classifier, convs=(nn.Conv2d, nn.ConvTranspose2d))

    def encode(self, pixel_values):
        """The attended feature maps of every stage (strides 4, 8, 16, 32 for a ResNet-34)."""
        x = self.resnet.embedder(pixel_values)
        features = []
        for stage, attention in zip(self.resnet.encoder.stages, self.attention):
            x = attention(stage(x))
            features.append(x)
        return features

    def forward(self, pixel_values, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        """labels: (B, H, W) class ids; the loss is the model's own CE at the labels' size."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        features = self.encode(pixel_values)
        x = self.centre(features[-1])
        for decoder, skip in zip(list(self.decoders)[:-1][::-1], features[-2::-1]):
            x = _match(decoder(x), skip) + skip  # LinkNet: additive skips
        logits = self.classifier(self.head(self.decoders[-1](x)))
        logits = _match(logits, pixel_values)

        loss = None
        if labels is not None:
            upsampled = _match(logits, labels[:, None]) if labels.shape[-2:] != logits.shape[-2:] else logits
            loss = own_loss(upsampled, labels, self.config)  # CE, or BCE for one sigmoid channel as the reference
        return model_output(loss, logits, tuple(features) if output_hidden_states else None, return_dict)


def load_resnet_encoder(weights, num_labels, id2label=None, **kwargs) -> CBDNetForSemanticSegmentation:
    """A CBD-Net whose encoder comes from a transformers ResNet checkpoint (e.g. an ImageNet ResNet-34).

    The checkpoint's ResNetConfig becomes the backbone (its channel count included: a 3-channel ImageNet
    model takes the grey image repeated); attention, centre and decoder start from random init.
    """
    resnet = ResNetModel.from_pretrained(weights)
    config = CBDNetConfig(
        backbone_config=resnet.config, num_channels=resnet.config.num_channels, num_labels=num_labels, **kwargs
    )
    if id2label is not None:
        config.id2label = {int(i): name for i, name in id2label.items()}
        config.label2id = {name: i for i, name in config.id2label.items()}
    model = CBDNetForSemanticSegmentation(config)
    model.resnet.load_state_dict(resnet.state_dict())
    return model


# The auto classes resolve "dakter_cbdnet" once this module is imported; save_pretrained writes auto_map.
register("dakter_cbdnet", CBDNetConfig, CBDNetForSemanticSegmentation)
