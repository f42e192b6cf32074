"""Each student builds, trains a step, gives per-pixel scores at label size, reloads with plain transformers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from student_helpers import ID2LABEL, TINY_OVERRIDES

from dakter_hf.students.losses import kd_loss, resize_logits, student_loss
from dakter_hf.students.models import (
    STUDENT_NAMES,
    build_student,
    input_channels,
    load_student,
    make_image_processor,
    mask2former_semantic_logits,
    student_config,
    student_logits,
    to_model_input,
)


@pytest.mark.parametrize("name", sorted(TINY_OVERRIDES))
def test_student_trains_and_round_trips(name, tmp_path, one_thread):
    model = build_student(name, ID2LABEL, seed=0, **TINY_OVERRIDES[name])
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    labels = torch.randint(0, 2, (2, 32, 32))
    soft = torch.randn(2, 2, 32, 32)
    model.train()
    logits = student_logits(model, images)
    scores = resize_logits(logits, labels.shape[-2:])
    assert scores.shape == (2, 2, 32, 32)
    loss = student_loss(
        logits, labels, soft, torch.tensor([False, True]), torch.tensor([False, True])
    ).per_sample.mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(int(g is not None and g.abs().sum() > 0) for g in grads) > len(grads) // 2

    model.eval()
    with torch.no_grad():
        reference = student_logits(model, images)
    model.save_pretrained(tmp_path)
    make_image_processor(model, 32).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["sar_input"] == {
        "channels": 1,
        "scaling": "pixel / 127.5 - 1",
    }
    reloaded, processor = load_student(str(tmp_path))
    with torch.no_grad():
        assert torch.allclose(student_logits(reloaded.eval(), images), reference, atol=1e-5)
    # the processor reproduces our input scaling on a grey image
    grey = (np.arange(32 * 32) % 256).astype(np.uint8).reshape(32, 32)
    pixel_values = processor(images=Image.fromarray(grey, mode="L"), return_tensors="pt")["pixel_values"]
    assert torch.allclose(pixel_values[0, 0], torch.from_numpy(grey / 127.5 - 1).float(), atol=1e-5)


PLAIN_LOAD = r"""
import sys, torch
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, Mask2FormerForUniversalSegmentation
folder, family = sys.argv[1], sys.argv[2]
if family == "mask2former":
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder).eval()
else:
    model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
AutoImageProcessor.from_pretrained(folder)
images = torch.load(folder + "/images.pt")
with torch.no_grad():
    out = model(pixel_values=images)
torch.save({k: v for k, v in out.items() if torch.is_tensor(v)}, folder + "/plain.pt")
assert "dakter_hf" not in sys.modules
"""


@pytest.mark.parametrize("name", sorted(TINY_OVERRIDES))
def test_saved_student_loads_with_plain_transformers(name, tmp_path):
    """A fresh interpreter that never imports dakter_hf gets the same raw outputs."""
    model = build_student(name, ID2LABEL, seed=0, **TINY_OVERRIDES[name]).eval()
    model.save_pretrained(tmp_path)
    make_image_processor(model, 32).save_pretrained(tmp_path)
    images = torch.rand(2, 1, 32, 32) * 2 - 1  # batch 2: Mask2Former's GroupNorm needs > 1 value per group at 1x1
    torch.save(images, tmp_path / "images.pt")
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    family = name.split("-")[0]
    subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(tmp_path), family], check=True, env=env, cwd=str(tmp_path))
    plain = torch.load(tmp_path / "plain.pt")
    with torch.no_grad():
        ours = model(pixel_values=images)
    key = "class_queries_logits" if family == "mask2former" else "logits"
    assert torch.allclose(plain[key], getattr(ours, key), atol=1e-5)


def test_mask2former_kd_uses_normalised_log_probabilities_and_reaches_both_heads(one_thread):
    model = build_student("mask2former-swin-tiny", ID2LABEL, seed=0, **TINY_OVERRIDES["mask2former-swin-tiny"])
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    outputs = model(pixel_values=images)
    logits = mask2former_semantic_logits(outputs.class_queries_logits, outputs.masks_queries_logits)
    # per-pixel log-probabilities: exp sums to 1 over classes
    assert torch.allclose(logits.exp().sum(1), torch.ones(2, 8, 8), atol=1e-4)
    # and they are the normalised einsum of query classes and masks
    semantic = torch.einsum(
        "bqc,bqhw->bchw", outputs.class_queries_logits.softmax(-1)[..., :-1], outputs.masks_queries_logits.sigmoid()
    )
    assert torch.allclose(logits.exp(), semantic / semantic.sum(1, keepdim=True), atol=1e-4)
    teacher = torch.randn(2, 2, 32, 32) * 3
    kd = kd_loss(resize_logits(logits, (32, 32)), teacher, 2.0).mean()
    kd.backward()
    class_head = model.class_predictor.weight.grad
    mask_head = [p.grad for n, p in model.named_parameters() if "mask_embedder" in n and p.grad is not None]
    assert class_head is not None and class_head.abs().sum() > 0
    assert mask_head and sum(g.abs().sum() for g in mask_head) > 0


def test_three_channel_students_repeat_the_grey_image():
    model = build_student("segformer-b0", ID2LABEL, seed=0, num_channels=3, **TINY_OVERRIDES["segformer-b0"])
    assert input_channels(model) == 3 and model.config.sar_input["channels"] == 3
    grey = torch.rand(2, 1, 16, 16)
    repeated = to_model_input(grey, 3)
    assert repeated.shape == (2, 3, 16, 16) and torch.equal(repeated[:, 2], grey[:, 0])
    processor = make_image_processor(model, 16)
    assert list(processor.image_mean) == [0.5, 0.5, 0.5]


def test_paper_sizes_and_names():
    assert "segformer-b3" in STUDENT_NAMES and "mask2former-swin-tiny" in STUDENT_NAMES
    b3 = student_config("segformer-b3", ID2LABEL)
    assert b3.depths == [3, 4, 18, 3] and b3.hidden_sizes == [64, 128, 320, 512] and b3.num_channels == 1
    swin = student_config("mask2former-swin-tiny", ID2LABEL).backbone_config
    assert swin.embed_dim == 96 and swin.depths == [2, 2, 6, 2] and swin.num_heads == [3, 6, 12, 24]
    with pytest.raises(ValueError, match="--student"):
        build_student("unet", ID2LABEL)


def test_student_weights_from_a_local_folder(tmp_path):
    """--student_weights: a saved model with another label count loads with a new classifier."""
    other = build_student("segformer-b0", {0: "a", 1: "b", 2: "c"}, seed=1, **TINY_OVERRIDES["segformer-b0"])
    other.save_pretrained(tmp_path)
    model = build_student("segformer-b0", ID2LABEL, weights=str(tmp_path))
    assert model.config.num_labels == 2 and model.config.id2label[1] == "oil"
    ours, theirs = model.state_dict(), other.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs if "classifier" not in k)
    assert ours["decode_head.classifier.weight"].shape[0] == 2
    with pytest.raises(FileNotFoundError, match="--student_weights"):
        build_student("segformer-b0", ID2LABEL, weights=str(tmp_path / "absent"))
