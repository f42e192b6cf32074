"""DeepLabV3+ student: shapes, loss/gradients, init determinism, configs, and save/load with plain transformers."""

import textwrap

import pytest
import torch
from student_helpers import assert_gradients_reach, assert_saved_with_code, run_without_dakter, save_for_reload
from transformers import AutoConfig, AutoModelForSemanticSegmentation, ResNetConfig

from dakter_hf.students.deeplabv3plus import (
    DeepLabV3PlusConfig,
    DeepLabV3PlusForSemanticSegmentation,
    deeplabv3plus_config,
)


def tiny_config(num_channels=1, num_labels=2, stages=3, **kwargs):
    """ResNet-18 layout with tiny widths; stages=4 keeps stage4 and reads it at stride 32."""
    backbone = ResNetConfig(
        num_channels=num_channels,
        embedding_size=8,
        hidden_sizes=[8, 16, 32, 64][:stages],
        depths=[1] * stages,
        layer_type="basic",
        out_features=["stage1", f"stage{stages}"],
    )
    return DeepLabV3PlusConfig(
        backbone_config=backbone,
        num_channels=num_channels,
        num_labels=num_labels,
        aspp_channels=16,
        atrous_rates=[1, 2, 3],
        low_level_channels=8,
        decoder_channels=16,
        **kwargs,
    )


def tiny_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    return DeepLabV3PlusForSemanticSegmentation(tiny_config(**kwargs))


def test_logits_are_at_quarter_resolution(one_thread):
    out = tiny_model()(torch.randn(2, 1, 32, 32))
    assert out.logits.shape == (2, 2, 8, 8)
    assert out.loss is None


def test_loss_is_finite_and_reaches_backbone_aspp_and_classifier(one_thread):
    model = tiny_model()
    labels = torch.randint(0, 2, (2, 32, 32))
    labels[0, :4] = 255  # ignored pixels
    out = model(torch.randn(2, 1, 32, 32), labels=labels, num_items_in_batch=7)  # extra kwargs are tolerated
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert_gradients_reach(
        model,
        [
            "backbone.embedder.embedder.convolution.weight",
            "aspp.convs.1.0.weight",
            "aspp.pooling.conv.weight",
            "decoder.reduce.0.weight",
            "decoder.classifier.weight",
        ],
    )


def test_start_loss_is_near_chance(one_thread):
    """The classifier starts small, so the untrained model predicts ~uniformly."""
    model = tiny_model(num_labels=3).eval()
    loss = model(torch.randn(2, 1, 32, 32), labels=torch.randint(0, 3, (2, 32, 32))).loss
    assert abs(loss.item() - torch.log(torch.tensor(3.0)).item()) < 0.1


def test_three_channels_and_stride_32_backbone(one_thread):
    model = tiny_model(num_channels=3, stages=4)
    out = model(torch.randn(2, 3, 32, 32), labels=torch.randint(0, 2, (2, 32, 32)))
    assert out.logits.shape == (2, 2, 8, 8)
    assert torch.isfinite(out.loss)


def test_tuple_output_and_hidden_states(one_thread):
    model = tiny_model().eval()
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    loss, logits = model(torch.randn(1, 1, 32, 32), labels=labels, return_dict=False)
    assert loss.ndim == 0 and logits.shape == (1, 2, 8, 8)
    out = model(torch.randn(1, 1, 32, 32), output_hidden_states=True)
    assert len(out.hidden_states) == 4  # stem + 3 stages


def test_binary_head(one_thread):
    model = tiny_model(num_labels=1)
    labels = torch.randint(0, 2, (2, 32, 32))
    out = model(torch.randn(2, 1, 32, 32), labels=labels)
    assert out.logits.shape == (2, 1, 8, 8) and torch.isfinite(out.loss)


def test_same_seed_same_init():
    a, b, c = tiny_model(seed=0).state_dict(), tiny_model(seed=0).state_dict(), tiny_model(seed=1).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["aspp.convs.0.0.weight"], c["aspp.convs.0.0.weight"])
    assert not torch.equal(
        a["backbone.embedder.embedder.convolution.weight"], c["backbone.embedder.embedder.convolution.weight"]
    )
    # BN starts as identity in both the backbone and the head
    assert torch.equal(a["aspp.project.1.weight"], torch.ones(16))
    assert torch.equal(a["aspp.project.1.running_var"], torch.ones(16))


def test_config_defaults_and_checks():
    config = DeepLabV3PlusConfig()
    assert config.num_channels == 1 and config.backbone_config.num_channels == 1
    assert config.backbone_config.out_features == ["stage1", "stage3"]
    assert config.backbone_config.depths == [2, 2, 2]  # ResNet-18 up to stage3 (output stride 16)
    assert DeepLabV3PlusConfig(num_channels=3).backbone_config.num_channels == 3
    with pytest.raises(ValueError, match="num_channels"):
        DeepLabV3PlusConfig(num_channels=3, backbone_config=tiny_config().backbone_config)

    again = DeepLabV3PlusConfig.from_dict(tiny_config(num_labels=3).to_dict())
    assert isinstance(again.backbone_config, ResNetConfig)
    assert again.backbone_config.hidden_sizes == [8, 16, 32]
    assert again.backbone_config.out_features == ["stage1", "stage3"]
    assert again.num_labels == 3 and again.atrous_rates == [1, 2, 3]


def test_helper_configs(one_thread):
    config = deeplabv3plus_config(2, id2label={0: "sea", 1: "oil"}, atrous_rates=(2, 4, 6))
    assert config.id2label == {0: "sea", 1: "oil"} and config.label2id == {"sea": 0, "oil": 1}
    assert config.backbone_config.layer_type == "basic" and config.atrous_rates == [2, 4, 6]

    full = deeplabv3plus_config(2, backbone="resnet18", output_stride=32).backbone_config
    assert full.depths == [2, 2, 2, 2] and full.out_features == ["stage1", "stage4"]

    config = deeplabv3plus_config(2, num_channels=3, backbone="resnet50")
    assert config.backbone_config.layer_type == "bottleneck"
    assert config.backbone_config.depths == [3, 4, 6] and config.backbone_config.hidden_sizes == [256, 512, 1024]
    model = DeepLabV3PlusForSemanticSegmentation(config).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).logits.shape == (1, 2, 8, 8)

    with pytest.raises(ValueError, match="backbone"):
        deeplabv3plus_config(2, backbone="resnet34")


LOAD_WITHOUT_DAKTER = textwrap.dedent(
    """
    import sys, torch
    from transformers import AutoConfig, AutoModelForSemanticSegmentation
    d = sys.argv[1]
    config = AutoConfig.from_pretrained(d, trust_remote_code=True)
    assert config.model_type == "dakter_deeplabv3plus", config.model_type
    assert config.id2label == {0: "sea", 1: "oil"}, config.id2label
    model = AutoModelForSemanticSegmentation.from_pretrained(d, trust_remote_code=True).eval()
    assert type(model).__name__ == "DeepLabV3PlusForSemanticSegmentation"
    assert not any(name.startswith("dakter_hf") for name in sys.modules), "dakter_hf was imported"
    saved = torch.load(d + "/check.pt")
    with torch.no_grad():
        logits = model(saved["x"]).logits
    torch.testing.assert_close(logits, saved["logits"], rtol=0, atol=1e-6)
    print("OK", type(model).__module__)
    """
)


def test_save_and_load_with_plain_transformers(tmp_path, one_thread):
    d = tmp_path / "model"
    x, logits = save_for_reload(tiny_model(id2label={0: "sea", 1: "oil"}), d)
    assert_saved_with_code(d, "deeplabv3plus", DeepLabV3PlusConfig, DeepLabV3PlusForSemanticSegmentation)

    assert "OK transformers_modules" in run_without_dakter(LOAD_WITHOUT_DAKTER, d, tmp_path=tmp_path)

    # In this process the classes are registered, so no remote code is needed.
    local = AutoModelForSemanticSegmentation.from_pretrained(d).eval()
    assert type(local) is DeepLabV3PlusForSemanticSegmentation
    assert isinstance(AutoConfig.from_pretrained(d), DeepLabV3PlusConfig)
    with torch.no_grad():
        torch.testing.assert_close(local(x).logits, logits, rtol=0, atol=1e-6)
