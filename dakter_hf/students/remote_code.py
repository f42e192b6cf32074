"""What the trust_remote_code students (deeplabv3plus.py, cbdnet.py) share: labels, init, loss, output, registration.

Self-contained (torch + transformers only) like the files that use it: they import it *relatively*
(``from .remote_code import ...``), and transformers' ``save_pretrained`` copies a modelling file's relative
imports next to it, so a saved checkpoint still loads with plain transformers and ``trust_remote_code=True``.
"""

from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForSemanticSegmentation, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SemanticSegmenterOutput


class SegmenterModel(PreTrainedModel):
    """Base of the students: image in as ``pixel_values``, per-pixel class logits out."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # forward takes **kwargs only to tolerate extras; without this the Trainer would pass
    # num_items_in_batch and skip dividing the loss by the gradient-accumulation steps.
    accepts_loss_kwargs = False


def label_kwargs(num_labels, id2label=None):
    """PretrainedConfig kwargs for `num_labels` classes, named by `id2label` (int keys) when given."""
    if id2label is None:
        return {"num_labels": num_labels}
    if len(id2label) != num_labels:
        raise ValueError(f"id2label has {len(id2label)} entries, num_labels is {num_labels}")
    id2label = {int(i): name for i, name in id2label.items()}
    # PretrainedConfig does not derive label2id from id2label
    return {"id2label": id2label, "label2id": {name: i for i, name in id2label.items()}}


def check_channels(config):
    """Raise unless the backbone takes the model's ``num_channels`` input channels."""
    backbone_channels = getattr(config.backbone_config, "num_channels", config.num_channels)
    if backbone_channels != config.num_channels:
        raise ValueError(f"num_channels={config.num_channels} but backbone_config.num_channels={backbone_channels}")


def init_head(module, classifier, convs=(nn.Conv2d,)):
    """`_init_weights` of the layers around a self-initialising backbone.

    `classifier` gets small logits (std 0.01: the untrained model predicts ~uniformly, start loss ~log C);
    other `convs` kaiming fan_out, BatchNorm identity. transformers.initialization functions skip tensors
    already loaded by from_pretrained.
    """
    if module is classifier:
        init.normal_(module.weight, std=0.01)
        init.zeros_(module.bias)
    elif isinstance(module, convs):
        init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        init.ones_(module.weight)
        init.zeros_(module.bias)
        init.zeros_(module.running_mean)
        init.ones_(module.running_var)
        init.zeros_(module.num_batches_tracked)


def own_loss(logits, labels, config):
    """The model's own loss on `logits` already at the labels' size: CE, or masked BCE for one channel."""
    ignore = config.semantic_loss_ignore_index
    if config.num_labels > 1:
        return F.cross_entropy(logits, labels.long(), ignore_index=ignore)
    # binary, one sigmoid channel (as SegformerForSemanticSegmentation does it)
    valid = ((labels >= 0) & (labels != ignore)).float()
    loss = F.binary_cross_entropy_with_logits(logits.squeeze(1), labels.float(), reduction="none")
    return (loss * valid).mean()


def model_output(loss, logits, hidden_states, return_dict):
    """A SemanticSegmenterOutput, or with ``return_dict=False`` the tuple (loss?, logits, hidden_states?)."""
    if return_dict:
        return SemanticSegmenterOutput(loss=loss, logits=logits, hidden_states=hidden_states)
    out = (logits,) + ((hidden_states,) if hidden_states is not None else ())
    return ((loss,) + out) if loss is not None else out


def register(model_type, config_class, model_class):
    """Register the classes with the auto classes, for local use and for save_pretrained.

    Local use: AutoConfig / AutoModelForSemanticSegmentation resolve `model_type` once the module is imported.
    save_pretrained: writes auto_map into config.json and copies the modelling file (and this one) next to the
    weights.
    """
    AutoConfig.register(model_type, config_class, exist_ok=True)
    AutoModelForSemanticSegmentation.register(config_class, model_class, exist_ok=True)
    config_class.register_for_auto_class()
    model_class.register_for_auto_class("AutoModelForSemanticSegmentation")
