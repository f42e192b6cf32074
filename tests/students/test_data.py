"""Mixing real and generated data for students: scale, soft labels, one augmentation for all targets."""

import numpy as np
import pytest
import torch
from student_helpers import write_generated_dataset

from dakter_hf.data.simulate import simulate_sar
from dakter_hf.errors import DataError
from dakter_hf.students.data import (
    build_eval_samples,
    build_training_samples,
    generated_rows,
    load_generated,
    student_collate,
)


@pytest.fixture(scope="module")
def real():
    return simulate_sar(8, num_classes=2, size=32, seed=0, num_test_samples=4)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    a, b = tmp_path_factory.mktemp("gen_a"), tmp_path_factory.mktemp("gen_b")
    soft_a = write_generated_dataset(a / "set", count=10, size=32, seed=1)
    soft_b = write_generated_dataset(b / "set", count=10, size=32, seed=2)
    return [str(a / "set"), str(b / "set")], [soft_a, soft_b]


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5, 2.0])
def test_scale_sets_the_number_of_generated_rows(real, generated, scale):
    sets = [load_generated(path) for path in generated[0]]
    samples = build_training_samples(real["train"], 32, generated=sets, scale=scale, augment=False)
    assert int(samples.is_generated.sum()) == round(scale * 8)
    assert int((~samples.is_generated).sum()) == 8
    # taken in turn from each set
    assert generated_rows(8, sets, scale)[:4] == [(0, 0), (1, 0), (0, 1), (1, 1)]


def test_generated_rows_keep_their_soft_labels_and_argmax_labels(real, generated):
    sets = [load_generated(generated[0][0])]
    samples = build_training_samples(real["train"], 32, generated=sets, scale=1.0, augment=False)
    row = samples[8]  # first generated row
    stored = torch.from_numpy(generated[1][0][0].astype(np.float32))
    assert row["is_generated"] and row["has_soft_label"]
    assert torch.allclose(row["soft_labels"], stored)
    assert torch.equal(row["labels"], stored.argmax(0))
    real_row = samples[0]
    assert not real_row["is_generated"] and not real_row["has_soft_label"] and real_row["soft_labels"].abs().sum() == 0


def test_hard_mode_drops_soft_labels(real, generated):
    sets = [load_generated(generated[0][0])]
    samples = build_training_samples(
        real["train"], 32, generated=sets, scale=1.0, use_soft_labels=False, augment=False
    )
    assert samples.soft_labels is None and not samples[8]["has_soft_label"]
    assert torch.equal(samples[8]["labels"], torch.from_numpy(generated[1][0][0].astype(np.float32)).argmax(0))


def test_resizing_soft_labels_to_the_student_resolution(real, generated):
    sets = [load_generated(generated[0][0])]
    samples = build_training_samples(real["train"], 16, generated=sets, scale=0.5, augment=False)
    row = samples[8]
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(generated[1][0][0].astype(np.float32))[None],
        size=(16, 16),
        mode="bilinear",
        align_corners=False,
    )[0]
    assert row["pixel_values"].shape == (1, 16, 16) and row["soft_labels"].shape == (2, 16, 16)
    assert torch.allclose(row["soft_labels"], expected, atol=1e-2)  # float16 storage
    assert torch.equal(row["labels"], row["soft_labels"].argmax(0))


def test_one_augmentation_moves_image_mask_and_soft_label_together(real, generated):
    sets = [load_generated(generated[0][0])]
    plain = build_training_samples(real["train"], 32, generated=sets, scale=1.0, augment=False)
    augmented = build_training_samples(real["train"], 32, generated=sets, scale=1.0, augment=True)
    changed = 0
    for seed in range(6):
        torch.manual_seed(seed)
        a, p = augmented[9], plain[9]
        # find the dihedral transform that maps the plain image onto the augmented one ...
        found = None
        for flip in (False, True):
            for k in range(4):
                image = p["pixel_values"].flip(-1) if flip else p["pixel_values"]
                if torch.equal(torch.rot90(image, k, dims=(-2, -1)), a["pixel_values"]):
                    found = (flip, k)
        assert found is not None
        flip, k = found
        changed += int(found != (False, 0))

        # ... and check the same transform maps the mask and the soft label
        def move(t):
            return torch.rot90(t.flip(-1) if flip else t, k, dims=(-2, -1))

        assert torch.equal(move(p["labels"]), a["labels"])
        assert torch.equal(move(p["soft_labels"]), a["soft_labels"])
    assert changed > 0


def test_eval_samples_keep_masks_at_native_size(real):
    samples = build_eval_samples(real["test"], 16)
    batch = student_collate([samples[i] for i in range(2)])
    assert batch["pixel_values"].shape == (2, 1, 16, 16) and batch["labels"].shape == (2, 32, 32)


def test_errors_name_the_problem(real, generated, tmp_path):
    sets = [load_generated(generated[0][0])]
    with pytest.raises(DataError, match="needs 24 generated rows"):
        build_training_samples(real["train"], 32, generated=sets, scale=3.0)
    with pytest.raises(ValueError, match="--scale"):
        generated_rows(8, sets, 0)
    with pytest.raises(DataError, match="--generated"):
        load_generated(str(tmp_path / "absent" / "dir"))
    write_generated_dataset(tmp_path / "l2", count=8, size=32, with_soft_labels=False)
    with pytest.raises(DataError, match="soft_label"):
        build_training_samples(real["train"], 32, generated=[load_generated(str(tmp_path / "l2"))], scale=1.0)
    write_generated_dataset(tmp_path / "five", count=8, size=32, classes=("a", "b", "c", "d", "e"))
    with pytest.raises(DataError, match="classes"):
        build_training_samples(real["train"], 32, generated=[load_generated(str(tmp_path / "five"))], scale=1.0)
