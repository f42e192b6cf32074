"""DAKTerTrainer: the routed loss inside transformers' Trainer, gradient accumulation, evaluation."""

import numpy as np
import pytest
import torch
from transformers import (
    SegformerConfig,
    SegformerForSemanticSegmentation,
    TrainingArguments,
)

from dakter_hf.students.data import StudentSamples, student_collate
from dakter_hf.students.losses import StudentLossConfig, student_loss
from dakter_hf.students.metrics import make_batch_compute_metrics
from dakter_hf.students.trainer import DAKTerTrainer


ID2LABEL = {0: "background", 1: "oil"}


def tiny_segformer(seed=0, dropout=None):
    torch.manual_seed(seed)
    rates = (
        {}
        if dropout is None
        else {
            "hidden_dropout_prob": dropout,
            "attention_probs_dropout_prob": dropout,
            "classifier_dropout_prob": dropout,
            "drop_path_rate": dropout,
        }
    )
    config = SegformerConfig(
        **rates,
        num_channels=1,
        num_labels=2,
        id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()},
        hidden_sizes=[8, 16, 16, 16],
        depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 1, 1],
        sr_ratios=[1, 1, 1, 1],
        decoder_hidden_size=16,
    )
    return SegformerForSemanticSegmentation(config)


def mixed_samples(count=8, size=16, seed=0):
    """Half real, half generated (with soft labels and argmax labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
    soft = (rng.normal(size=(count // 2, 2, size, size)) * 3).astype(np.float16)
    masks = rng.integers(0, 2, (count, size, size)).astype(np.uint8)
    masks[count // 2 :] = soft.astype(np.float32).argmax(1)
    soft_index = np.r_[np.full(count // 2, -1), np.arange(count // 2)]
    flags = np.r_[np.zeros(count // 2, bool), np.ones(count // 2, bool)]
    order = rng.permutation(count)  # real and generated interleaved
    return StudentSamples(
        images[order], masks[order], soft, soft_index[order], flags[order], num_classes=2, augment=False
    )


def make_trainer(tmp_path, model, samples, **overrides):
    values = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 4,
        "max_steps": 1,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "remove_unused_columns": False,
        "report_to": "none",
        "use_cpu": True,
        "save_strategy": "no",
        "logging_steps": 1,
        "seed": 0,
        "data_seed": 0,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
        "label_names": ["labels"],
        "weight_decay": 0.0,
    }
    values.update(overrides)
    return DAKTerTrainer(
        model=model, args=TrainingArguments(**values), train_dataset=samples, data_collator=student_collate
    )


def test_compute_loss_is_the_mean_routed_loss(tmp_path):
    samples = mixed_samples()
    model = tiny_segformer()
    trainer = make_trainer(tmp_path, model, samples)
    batch = student_collate([samples[i] for i in range(4)])
    model.eval()  # no dropout: the two forward passes must agree
    loss = trainer.compute_loss(model, batch)
    logits = model(pixel_values=batch["pixel_values"]).logits
    expected = student_loss(
        logits,
        batch["labels"],
        batch["soft_labels"],
        batch["has_soft_label"],
        batch["is_generated"],
        StudentLossConfig(),
    ).per_sample.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert batch["has_soft_label"].any() and not batch["has_soft_label"].all()


def _train_once(tmp_path, batch, accumulation):
    torch.manual_seed(0)
    model = tiny_segformer(dropout=0.0)
    model.decode_head.batch_norm = torch.nn.Identity()
    # plain SGD: its step is proportional to the gradient, so a mis-scaled loss shows in the weights
    # (AdamW would hide it)
    trainer = make_trainer(
        tmp_path,
        model,
        mixed_samples(),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        max_grad_norm=0.0,
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {name: p.detach().clone() for name, p in model.named_parameters()}, losses[0]


def test_gradient_accumulation_2x2_equals_one_batch_of_4(tmp_path, one_thread):
    """Same 4 samples in the same order (same seed), no dropout and no BatchNorm (BN sees different batches)."""
    weights_a, loss_a = _train_once(tmp_path / "a", 4, 1)
    weights_b, loss_b = _train_once(tmp_path / "b", 2, 2)
    initial = tiny_segformer(dropout=0.0).state_dict()
    assert loss_a == pytest.approx(loss_b, rel=1e-4)
    moved = 0
    for name in weights_a:
        assert torch.allclose(weights_a[name], weights_b[name], atol=1e-5), name
        moved += int(not torch.allclose(weights_a[name], initial[name]))
    assert moved > 0


def test_needs_remove_unused_columns_false(tmp_path):
    with pytest.raises(ValueError, match="remove_unused_columns"):
        make_trainer(tmp_path, tiny_segformer(), mixed_samples(), remove_unused_columns=True)


def test_evaluation_returns_argmax_maps_and_batch_metrics(tmp_path):
    samples = mixed_samples()
    model = tiny_segformer()
    trainer = make_trainer(tmp_path, model, samples, per_device_eval_batch_size=3, batch_eval_metrics=True)
    trainer.compute_metrics = make_batch_compute_metrics(2, id2label=ID2LABEL)
    batch = student_collate([samples[i] for i in range(3)])
    loss, predictions, labels = trainer.prediction_step(model, batch, prediction_loss_only=False)
    assert predictions.shape == labels.shape == (3, 16, 16) and predictions.dtype == torch.int64
    metrics = trainer.evaluate(samples)
    assert 0 <= metrics["eval_mean_iou"] <= 1 and "eval_iou_oil" in metrics
    # the same numbers from a hand loop over the whole set
    with torch.no_grad():
        full = student_collate([samples[i] for i in range(len(samples))])
        logits = torch.nn.functional.interpolate(
            model(pixel_values=full["pixel_values"]).logits, size=(16, 16), mode="bilinear", align_corners=False
        )
    predicted = logits.argmax(1)
    truth = full["labels"]
    oil_iou = ((predicted == 1) & (truth == 1)).sum() / ((predicted == 1) | (truth == 1)).sum()
    assert metrics["eval_iou_oil"] == pytest.approx(oil_iou.item(), abs=1e-6)


def test_logs_carry_the_loss_terms(tmp_path):
    trainer = make_trainer(tmp_path, tiny_segformer(), mixed_samples(), max_steps=2)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry][0]
    assert {"loss_ce", "loss_dice", "loss_kd", "generated_fraction"} <= set(logged)
