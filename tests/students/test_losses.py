"""The student losses (Eq. 3-6) against hand computations, and the per-sample routing."""

import math

import pytest
import torch
import torch.nn.functional as F

from dakter_hf.students.losses import (
    StudentLossConfig,
    boundary_loss,
    class_edges,
    dice_loss,
    kd_loss,
    one_hot,
    resize_logits,
    student_loss,
)


def _hand_kd(student, teacher, T):
    """T^2 * mean over pixels of sum_c q_c (log q_c - log p_c), written with explicit loops."""
    b, c, h, w = student.shape
    out = []
    for i in range(b):
        total = 0.0
        for y in range(h):
            for x in range(w):
                zt = [teacher[i, k, y, x].item() / T for k in range(c)]
                zs = [student[i, k, y, x].item() / T for k in range(c)]
                lt = [z - math.log(sum(math.exp(v) for v in zt)) for z in zt]
                ls = [z - math.log(sum(math.exp(v) for v in zs)) for z in zs]
                total += sum(math.exp(a) * (a - s) for a, s in zip(lt, ls))
        out.append(T * T * total / (h * w))
    return torch.tensor(out)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_matches_hand_computation_with_t_squared(T):
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 5, generator=g) * 3, torch.randn(2, 3, 4, 5, generator=g) * 3
    assert torch.allclose(kd_loss(student, teacher, T), _hand_kd(student, teacher, T).float(), atol=1e-5)


def test_kd_scales_with_t_squared():
    """Logits scaled with T keep the same distributions, so the loss scales exactly with T^2."""
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(1, 2, 3, 3, generator=g), torch.randn(1, 2, 3, 3, generator=g)
    assert torch.allclose(kd_loss(student * 2, teacher * 2, 2.0), 4 * kd_loss(student, teacher, 1.0), atol=1e-6)


def test_kd_at_t1_equals_soft_target_cross_entropy_up_to_teacher_entropy():
    g = torch.Generator().manual_seed(2)
    student = torch.randn(2, 4, 6, 6, generator=g, requires_grad=True)
    teacher = torch.randn(2, 4, 6, 6, generator=g)
    q = teacher.softmax(1)
    soft_ce = F.cross_entropy(student, q, reduction="none").flatten(1).mean(1)
    entropy = -(q * q.log()).sum(1).flatten(1).mean(1)
    kd = kd_loss(student, teacher, 1.0)
    assert torch.allclose(kd, soft_ce - entropy, atol=1e-5)
    grad_kd = torch.autograd.grad(kd.sum(), student)[0]
    grad_ce = torch.autograd.grad(soft_ce.sum(), student)[0]
    assert torch.allclose(grad_kd, grad_ce, atol=1e-6)


def test_kd_is_zero_for_a_perfect_student():
    teacher = torch.randn(1, 2, 4, 4)
    assert kd_loss(teacher.clone(), teacher, 2.0).abs().max() < 1e-6


def test_dice_on_known_masks():
    target = torch.zeros(1, 2, 2, 2)
    target[0, 1, 0, :] = 1  # class 1 on the top row
    target[0, 0, 1, :] = 1
    perfect = target.clone()
    assert dice_loss(perfect, target, smooth=0.0).item() == pytest.approx(0.0)
    swapped = target.flip(1)
    assert dice_loss(swapped, target, smooth=0.0).item() == pytest.approx(1.0)
    half = torch.full((1, 2, 2, 2), 0.5)  # class c: |P T| = 1, |P| = 2, |T| = 2 -> dice = 0.5
    assert dice_loss(half, target, smooth=0.0).item() == pytest.approx(0.5)
    # one class overlapping on 1 of 2 pixels with one extra pixel: 2*1 / (2 + 2) = 0.5; the other likewise
    partial = torch.zeros(1, 2, 2, 2)
    partial[0, 1, 0, 0] = partial[0, 1, 1, 0] = 1
    partial[0, 0, 0, 1] = partial[0, 0, 1, 1] = 1
    assert dice_loss(partial, target, smooth=0.0).item() == pytest.approx(0.5)


def test_dice_with_soft_targets_and_smoothing():
    probabilities = torch.tensor([[[[0.8]], [[0.2]]]])
    targets = torch.tensor([[[[0.6]], [[0.4]]]])
    s = 1.0
    expected = 1 - ((2 * 0.48 + s) / (1.4 + s) + (2 * 0.08 + s) / (0.6 + s)) / 2
    assert dice_loss(probabilities, targets, smooth=s).item() == pytest.approx(expected, rel=1e-6)


def test_mixed_batch_routes_each_sample():
    """Sample 0 real: CE + 0.5 Dice(mask). Sample 1 generated: 0.1 KD + CE(argmax) + 0.5 Dice(soft target option)."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 2, 4, 4, generator=g)
    soft = torch.randn(2, 2, 8, 8, generator=g) * 4
    labels = torch.randint(0, 2, (2, 8, 8), generator=g)
    labels[1] = soft[1].argmax(0)
    out = student_loss(
        logits,
        labels,
        soft,
        has_soft_label=torch.tensor([False, True]),
        is_generated=torch.tensor([False, True]),
        config=StudentLossConfig(generated_dice_target="soft"),
    )
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    p = up.softmax(1)
    # sample 0, by hand
    ce0 = F.cross_entropy(up[:1], labels[:1])
    dice0 = dice_loss(p[:1], one_hot(labels[:1], 2))
    assert out.per_sample[0].item() == pytest.approx((ce0 + 0.5 * dice0).item(), rel=1e-5)
    assert out.kd[0].item() == 0.0
    # sample 1, by hand
    ce1 = F.cross_entropy(up[1:], labels[1:])
    kd1 = _hand_kd(up[1:], soft[1:], 2.0)
    dice1 = dice_loss(p[1:], soft[1:].softmax(1))
    assert out.per_sample[1].item() == pytest.approx((ce1 + 0.1 * kd1 + 0.5 * dice1).item(), rel=1e-4)


def test_literal_eq5_drops_ce_for_generated_only():
    g = torch.Generator().manual_seed(4)
    logits, soft = torch.randn(2, 2, 8, 8, generator=g), torch.randn(2, 2, 8, 8, generator=g)
    labels = soft.argmax(1)
    flags = torch.tensor([False, True])
    full = student_loss(logits, labels, soft, flags, flags)
    literal = student_loss(logits, labels, soft, flags, flags, StudentLossConfig(generated_ce=False))
    assert literal.per_sample[0] == pytest.approx(full.per_sample[0].item())
    assert literal.per_sample[1].item() == pytest.approx((full.per_sample[1] - full.ce[1]).item(), rel=1e-6)


def test_hard_mode_has_no_kd_and_hard_dice():
    g = torch.Generator().manual_seed(5)
    logits, soft = torch.randn(1, 2, 8, 8, generator=g), torch.randn(1, 2, 8, 8, generator=g)
    labels = soft.argmax(1)
    out = student_loss(
        logits,
        labels,
        None,
        None,
        torch.tensor([True]),
        StudentLossConfig(kd_weight=0.0, generated_dice_target="hard"),
    )
    expected = F.cross_entropy(logits, labels) + 0.5 * dice_loss(logits.softmax(1), one_hot(labels, 2))
    assert out.per_sample[0].item() == pytest.approx(expected.item(), rel=1e-5)


def test_teacher_kd_real_sample_keeps_mask_targets():
    """Teacher-KD baseline: a real sample with a soft label gets KD, but CE and Dice still use its mask."""
    g = torch.Generator().manual_seed(6)
    logits, soft = torch.randn(1, 2, 8, 8, generator=g), torch.randn(1, 2, 8, 8, generator=g)
    labels = torch.randint(0, 2, (1, 8, 8), generator=g)
    out = student_loss(logits, labels, soft, torch.tensor([True]), torch.tensor([False]))
    expected = (
        F.cross_entropy(logits, labels)
        + 0.1 * kd_loss(logits, soft, 2.0)[0]
        + 0.5 * dice_loss(logits.softmax(1), one_hot(labels, 2))[0]
    )
    assert out.per_sample[0].item() == pytest.approx(expected.item(), rel=1e-5)


def test_ignored_pixels_do_not_count():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(1, 2, 4, 4, generator=g)
    labels = torch.randint(0, 2, (1, 4, 4), generator=g)
    ignored = labels.clone()
    ignored[0, 0] = 255
    changed = logits.clone()
    changed[0, :, 0] = torch.randn(2, 4, generator=g) * 10  # anything under ignored pixels
    a = student_loss(logits, ignored)
    b = student_loss(changed, ignored)
    assert torch.allclose(a.per_sample, b.per_sample)
    assert not torch.allclose(student_loss(logits, labels).per_sample, a.per_sample)


def test_logits_are_upsampled_to_label_size():
    logits = torch.randn(1, 2, 4, 4)
    assert resize_logits(logits, (16, 16)).shape == (1, 2, 16, 16)
    assert resize_logits(logits, (4, 4)) is logits
    assert student_loss(logits, torch.zeros(1, 16, 16, dtype=torch.long)).per_sample.shape == (1,)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="temperature"):
        StudentLossConfig(temperature=0)
    with pytest.raises(ValueError, match="kd_weight"):
        StudentLossConfig(kd_weight=-1)
    with pytest.raises(ValueError, match="generated_dice_target"):
        StudentLossConfig(generated_dice_target="fuzzy")
    with pytest.raises(ValueError, match="soft_labels"):
        student_loss(torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), None, torch.tensor([True]))


def test_default_kd_arm_is_the_hard_arm_plus_kd():
    """With the defaults, a generated sample's loss in the KD arm = its loss in the hard arm + 0.1 KD."""
    g = torch.Generator().manual_seed(8)
    logits, soft = torch.randn(2, 2, 8, 8, generator=g), torch.randn(2, 2, 8, 8, generator=g) * 2
    labels = soft.argmax(1)
    flags = torch.tensor([True, True])
    kd_arm = student_loss(logits, labels, soft, flags, flags)
    hard_arm = student_loss(logits, labels, None, None, flags, StudentLossConfig(kd_weight=0.0))
    assert torch.allclose(kd_arm.per_sample, hard_arm.per_sample + 0.1 * kd_loss(logits, soft, 2.0), atol=1e-6)


def _hand_edges(m):
    """The reference's inner edge, with loops: max of (1 - m) over the in-image 3x3 window minus (1 - m)."""
    h, w = len(m), len(m[0])

    def window(y, x):
        return [(j, i) for j in range(max(0, y - 1), min(h, y + 2)) for i in range(max(0, x - 1), min(w, x + 2))]

    return [[max(1 - m[j][i] for j, i in window(y, x)) - (1 - m[y][x]) for x in range(w)] for y in range(h)]


def _hand_wide(e, size=5):
    h, w, r = len(e), len(e[0]), size // 2

    def window(y, x):
        rows, cols = range(max(0, y - r), min(h, y + r + 1)), range(max(0, x - r), min(w, x + r + 1))
        return [(j, i) for j in rows for i in cols]

    return [[max(e[j][i] for j, i in window(y, x)) for x in range(w)] for y in range(h)]


def _hand_boundary(probabilities, mask):
    """1 - BF1 averaged over classes, for one sample, with python loops."""
    terms = []
    for c in range(probabilities.shape[0]):
        p = probabilities[c].tolist()
        t = [[1.0 if v == c else 0.0 for v in row] for row in mask.tolist()]
        pe, te = _hand_edges(p), _hand_edges(t)
        pw, tw = _hand_wide(pe), _hand_wide(te)
        cells = [(y, x) for y in range(len(p)) for x in range(len(p[0]))]
        precision = sum(pe[y][x] * tw[y][x] for y, x in cells) / (sum(pe[y][x] for y, x in cells) + 1e-7)
        recall = sum(pw[y][x] * te[y][x] for y, x in cells) / (sum(te[y][x] for y, x in cells) + 1e-7)
        terms.append(1 - 2 * precision * recall / (precision + recall + 1e-7))
    return sum(terms) / len(terms)


def test_boundary_edges_of_a_known_mask():
    mask = torch.zeros(1, 6, 6, dtype=torch.long)
    mask[0, 1:4, 2:5] = 1  # a 3 x 3 oil square
    edges = class_edges(one_hot(mask, 2))
    oil = torch.zeros(6, 6)
    oil[1:4, 2:5] = 1
    oil[2, 3] = 0  # the square's ring: its centre has no background neighbour
    assert torch.equal(edges[0, 1], oil)
    background = torch.zeros(6, 6)
    background[0:5, 1:6] = 1
    background[1:4, 2:5] = 0  # the 16 background pixels around the square
    assert torch.equal(edges[0, 0], background) and int(edges[0, 0].sum()) == 16
    # the image border is no edge: an all-oil image has none
    assert class_edges(torch.ones(1, 1, 4, 4)).abs().sum() == 0


def test_boundary_term_matches_a_hand_computation():
    mask = torch.zeros(2, 6, 6, dtype=torch.long)
    mask[0, 1:4, 2:5] = 1
    mask[1, :, 4:] = 1
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(2, 2, 6, 6, generator=g) * 2
    probabilities = logits.softmax(1)
    ours = boundary_loss(probabilities, one_hot(mask, 2))
    for i in range(2):
        assert ours[i].item() == pytest.approx(_hand_boundary(probabilities[i], mask[i]), abs=1e-6)
    # a perfect prediction has BF1 = 1 per class; a one-pixel shift is forgiven by the 5 x 5 tolerance
    assert boundary_loss(one_hot(mask, 2), one_hot(mask, 2)).abs().max() < 1e-6
    shifted = torch.roll(mask, 1, dims=-1)
    by_hand = _hand_boundary(one_hot(shifted, 2)[0], mask[0])
    assert boundary_loss(one_hot(shifted, 2), one_hot(mask, 2))[0].item() == pytest.approx(by_hand, abs=1e-6)
    assert boundary_loss(one_hot(shifted, 2), one_hot(mask, 2))[0].item() < 1e-6
    # an image without oil: the oil class has no edge, BF1 = 0 (the reference's constant 1 for that class)
    empty = torch.zeros(1, 6, 6, dtype=torch.long)
    assert boundary_loss(probabilities[:1], one_hot(empty, 2)).item() == pytest.approx(1.0, abs=1e-6)


def test_boundary_weight_adds_the_term_and_uses_argmax_edges_for_generated_samples():
    g = torch.Generator().manual_seed(12)
    logits, soft = torch.randn(2, 2, 8, 8, generator=g), torch.randn(2, 2, 8, 8, generator=g) * 3
    labels = soft.argmax(1)
    flags = torch.tensor([False, True])
    plain = student_loss(logits, labels, soft, flags, flags, StudentLossConfig(generated_dice_target="soft"))
    config = StudentLossConfig(generated_dice_target="soft", boundary_weight=0.7)
    with_edges = student_loss(logits, labels, soft, flags, flags, config)
    expected = boundary_loss(logits.softmax(1), one_hot(labels, 2))  # argmax edges, even with soft Dice targets
    assert torch.allclose(with_edges.boundary, expected, atol=1e-6)
    assert torch.allclose(with_edges.per_sample, plain.per_sample + 0.7 * expected, atol=1e-6)
    assert torch.equal(plain.boundary, torch.zeros(2))  # off by default
    with pytest.raises(ValueError, match="boundary_weight"):
        StudentLossConfig(boundary_weight=-1)
    with pytest.raises(ValueError, match="boundary_kernel"):
        StudentLossConfig(boundary_kernel=4)


def test_boundary_term_ignores_predictions_on_ignored_pixels():
    """Ignored pixels act like the image border: no edges there, none caused next to them."""
    mask = torch.zeros(1, 6, 6, dtype=torch.long)
    mask[0, 1:5, 2:5] = 1  # oil touches row 4; row 5 is ignored below
    ignored = mask.clone()
    ignored[0, 5] = 255
    valid = (ignored != 255).float()
    edges = class_edges(one_hot(ignored, 2), valid=valid)
    assert edges[0, :, 5].abs().sum() == 0 and edges[0, 1, 4, 3] == 0  # oil above the ignored row is no edge
    g = torch.Generator().manual_seed(13)
    probabilities = torch.randn(1, 2, 6, 6, generator=g).softmax(1)
    changed = probabilities.clone()
    changed[0, :, 5] = torch.rand(2, 6, generator=g).softmax(0)
    a = boundary_loss(probabilities, one_hot(ignored, 2), valid)
    assert torch.allclose(a, boundary_loss(changed, one_hot(ignored, 2), valid), atol=1e-7)
    assert not torch.allclose(a, boundary_loss(changed, one_hot(mask, 2)))
    loss = student_loss(torch.log(probabilities), ignored, config=StudentLossConfig(boundary_weight=1.0))
    assert torch.allclose(loss.boundary, a, atol=1e-6)
