"""CBD-Net student: ResNet-34 layout, scSE / centre / LinkNet decoder, logits at label size, training, save/load."""

import json
import os
import textwrap

import pytest
import torch
from student_helpers import (
    ID2LABEL,
    TINY_OVERRIDES,
    assert_gradients_reach,
    assert_saved_with_code,
    run_without_dakter,
    save_for_reload,
)
from transformers import AutoConfig, AutoModelForSemanticSegmentation, ResNetConfig, ResNetModel

from dakter_hf.students.cbdnet import (
    SCSE,
    CBDNetConfig,
    CBDNetForSemanticSegmentation,
    DilatedCentre,
    cbdnet_config,
)
from dakter_hf.students.losses import StudentLossConfig, student_loss
from dakter_hf.students.models import build_student, load_student, make_image_processor, student_config, student_logits
from dakter_hf.students.train import StudentArguments


TINY = TINY_OVERRIDES["cbdnet-resnet34"]


def tiny_model(seed=0, **kwargs):
    return build_student("cbdnet-resnet34", ID2LABEL, seed=seed, **{**TINY, **kwargs})


def test_paper_layout_is_a_resnet34():
    config = student_config("cbdnet-resnet34", ID2LABEL)
    resnet = config.backbone_config
    assert isinstance(config, CBDNetConfig) and config.model_type == "dakter_cbdnet"
    assert (
        resnet.layer_type == "basic" and resnet.depths == [3, 4, 6, 3] and resnet.hidden_sizes == [64, 128, 256, 512]
    )
    assert resnet.num_channels == 1 and config.num_channels == 1 and config.dilations == [1, 2, 4, 8]
    assert config.id2label == {0: "background", 1: "oil"}
    model = CBDNetForSemanticSegmentation(config)
    backbone = sum(p.numel() for p in model.resnet.parameters())
    # torchvision's resnet34 has 21.28 M parameters, 9.4 k of them in the 3-channel stem we do not have
    assert abs(backbone - (21_284_672 - 2 * 64 * 49)) < 1000, backbone
    assert len(model.attention) == 4 and len(model.decoders) == 4 and len(model.centre.convs) == 4


def test_two_samples_forward_backward_and_logits_at_label_size(one_thread):
    model = tiny_model().train()
    images = torch.rand(2, 1, 64, 64) * 2 - 1
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[0, 10:30, 20:50] = 1
    labels[1, 40:, :] = 1
    logits = student_logits(model, images)
    assert logits.shape == (2, 2, 64, 64)  # the labels' size: no resize before the loss
    out = student_loss(logits, labels, config=StudentLossConfig(boundary_weight=1.0))
    assert torch.isfinite(out.per_sample).all() and (out.boundary > 0).all()
    out.per_sample.mean().backward()
    assert_gradients_reach(
        model,
        [
            "resnet.embedder.embedder.convolution.weight",
            "resnet.encoder.stages.3.layers.0.layer.0.convolution.weight",
            "attention.0.channel.squeeze.weight",
            "attention.3.spatial.squeeze.weight",
            "centre.convs.3.weight",
            "decoders.0.upsample.0.weight",
            "decoders.3.expand.0.weight",
            "head.0.weight",
            "classifier.weight",
        ],
    )
    # the model's own loss (CE at label size), and inputs that are not a multiple of 32
    own = model(pixel_values=images, labels=labels)
    assert torch.isfinite(own.loss) and own.logits.shape == (2, 2, 64, 64)
    assert model.eval()(pixel_values=torch.randn(1, 1, 50, 70)).logits.shape == (1, 2, 50, 70)


def test_start_loss_is_near_chance(one_thread):
    model = tiny_model(seed=1).eval()
    with torch.no_grad():
        loss = model(pixel_values=torch.randn(2, 1, 32, 32), labels=torch.randint(0, 2, (2, 32, 32))).loss
    assert abs(loss.item() - torch.log(torch.tensor(2.0)).item()) < 0.05


def test_scse_and_centre_blocks():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5)
    block = SCSE(4)
    channel = torch.sigmoid(block.channel.excite(block.channel.squeeze(x.mean((2, 3), keepdim=True))))
    spatial = torch.sigmoid(block.spatial.squeeze(x))
    assert torch.allclose(block(x), x * channel + x * spatial, atol=1e-6)
    centre = DilatedCentre(4, [1, 2])
    h1 = torch.relu(centre.convs[0](x))
    h2 = torch.relu(centre.convs[1](h1))
    assert torch.allclose(centre(x), x + h1 + h2, atol=1e-6)
    assert centre.convs[1].dilation == (2, 2) and centre.convs[1].padding == (2, 2)


def test_config_round_trip_and_checks():
    config = cbdnet_config(3, num_channels=3, backbone={"depths": [1, 1, 1, 1]}, dilations=(1, 2))
    again = CBDNetConfig.from_dict(config.to_dict())
    assert isinstance(again.backbone_config, ResNetConfig) and again.backbone_config.depths == [1, 1, 1, 1]
    assert again.num_channels == 3 and again.dilations == [1, 2] and again.num_labels == 3
    assert CBDNetConfig().backbone_config.depths == [3, 4, 6, 3]
    with pytest.raises(ValueError, match="num_channels"):
        CBDNetConfig(num_channels=3, backbone_config=ResNetConfig(num_channels=1))


def test_boundary_weight_defaults_to_the_reference_for_cbdnet_only():
    assert StudentArguments(student="cbdnet-resnet34", mode="real").loss_config().boundary_weight == 1.0
    assert StudentArguments(student="segformer-b0", mode="real").loss_config().boundary_weight == 0.0
    assert (
        StudentArguments(student="cbdnet-resnet34", mode="real", boundary_weight=0.0).loss_config().boundary_weight
        == 0.0
    )
    assert (
        StudentArguments(student="segformer-b0", mode="real", boundary_weight=0.5).loss_config().boundary_weight == 0.5
    )


def test_student_weights_from_a_transformers_resnet(tmp_path, one_thread):
    """--student_weights may be a ResNet checkpoint (an ImageNet ResNet-34): it becomes the encoder."""
    torch.manual_seed(3)
    resnet = ResNetModel(
        ResNetConfig(
            num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], layer_type="basic"
        )
    )
    resnet.save_pretrained(tmp_path / "resnet")
    model = build_student("cbdnet-resnet34", ID2LABEL, weights=str(tmp_path / "resnet"), final_channels=8)
    assert model.config.num_channels == 3 and model.config.sar_input["channels"] == 3
    theirs = resnet.state_dict()
    assert all(torch.equal(model.resnet.state_dict()[k], theirs[k]) for k in theirs)
    assert student_logits(model.eval(), torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    # a saved CBD-Net loads as itself
    tiny_model().save_pretrained(tmp_path / "cbdnet")
    again = build_student("cbdnet-resnet34", ID2LABEL, weights=str(tmp_path / "cbdnet"))
    assert isinstance(again, CBDNetForSemanticSegmentation) and again.config.backbone_config.hidden_sizes == [
        8,
        16,
        32,
        64,
    ]


LOAD_WITHOUT_DAKTER = textwrap.dedent(
    """
    import sys, torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation
    d = sys.argv[1]
    config = AutoConfig.from_pretrained(d, trust_remote_code=True)
    assert config.model_type == "dakter_cbdnet", config.model_type
    model = AutoModelForSemanticSegmentation.from_pretrained(d, trust_remote_code=True).eval()
    assert type(model).__name__ == "CBDNetForSemanticSegmentation"
    AutoImageProcessor.from_pretrained(d)
    assert not any(name.startswith("dakter_hf") for name in sys.modules), "dakter_hf was imported"
    saved = torch.load(d + "/check.pt")
    with torch.no_grad():
        logits = model(pixel_values=saved["x"]).logits
    torch.testing.assert_close(logits, saved["logits"], rtol=0, atol=1e-6)
    print("OK", type(model).__module__)
    """
)


def test_save_and_reload_with_plain_transformers(tmp_path, one_thread):
    model = tiny_model()
    d = tmp_path / "model"
    x, logits = save_for_reload(model, d)
    make_image_processor(model, 32).save_pretrained(d)
    assert_saved_with_code(d, "cbdnet", CBDNetConfig, CBDNetForSemanticSegmentation)
    assert "OK transformers_modules" in run_without_dakter(LOAD_WITHOUT_DAKTER, d, tmp_path=tmp_path)
    # in this process: the registered classes, and the package's loader
    local = AutoModelForSemanticSegmentation.from_pretrained(d).eval()
    assert type(local) is CBDNetForSemanticSegmentation and isinstance(AutoConfig.from_pretrained(d), CBDNetConfig)
    reloaded, _ = load_student(str(d))
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(pixel_values=x).logits, logits, rtol=0, atol=1e-6)


def test_train_student_writes_a_card_with_remote_code_and_the_boundary_term(tmp_path, one_thread):
    from dakter_hf.data.save import save_dataset
    from dakter_hf.data.simulate import simulate_sar
    from dakter_hf.students.train import main

    save_dataset(simulate_sar(8, num_classes=2, size=32, seed=0, num_test_samples=4), str(tmp_path / "real"))
    flags = (
        "--mode real --student cbdnet-resnet34 --resolution 32 --max_steps 2 --per_device_train_batch_size 4"
        " --logging_steps 1 --save_strategy no --disable_tqdm true --use_cpu true --report_to none"
    )
    paths = ["--real", str(tmp_path / "real"), "--output_dir", str(tmp_path / "student")]
    out = main([*paths, "--student_config", json.dumps(TINY), *flags.split()])
    card = open(os.path.join(out, "README.md")).read()
    assert "trust_remote_code=True" in card and "CBDNetForSemanticSegmentation" in card
    assert "boundary (1 - BF1 of the mask edges) x 1" in card
    logged = json.load(open(os.path.join(out, "trainer_state.json")))["log_history"]
    assert any("loss_boundary" in entry for entry in logged)
    assert "ece" in json.load(open(os.path.join(out, "test_metrics.json")))  # calibration beside Table 4
