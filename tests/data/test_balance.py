"""Balancing factor b = sqrt(P(x0) / P(y0)) (paper Eq. 9-10, Sec. 3.3.1).

The reference values here are computed directly with np.fft.fft2 (not with the
library's helpers), so a wrong normalisation, a wrong x0 / y0 mapping or a wrong
averaging in dakter_hf.data.balance fails these tests.
"""

import datasets
import numpy as np
import pytest
from helpers import reference_b, reference_power  # noqa: E402
from PIL import Image

from dakter_hf.data.balance import (
    BalanceStats,
    balancing_factor,
    compute_balance_stats,
    mean_power,
    normalized_one_hot,
)


# --- mean_power: Parseval and the scaling law ---------------------------------


@pytest.mark.parametrize("shape", [(8, 8), (5, 7), (16, 3), (1, 9)])
def test_mean_power_is_parseval(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=shape) * 3.0 + 0.5
    height, width = shape
    # Parseval: sum |X|^2 = H*W * sum x^2, so mean |X|^2 = H*W * mean x^2
    assert mean_power(x) == pytest.approx(height * width * np.mean(x**2), rel=1e-12)
    assert mean_power(x) == pytest.approx(reference_power(x), rel=1e-12)


def test_mean_power_of_constant_and_zero():
    assert mean_power(np.zeros((4, 6))) == 0.0
    # a constant c puts all energy in the DC bin: |X_0|^2 = (H W c)^2, mean = H W c^2
    assert mean_power(np.full((4, 6), -2.0)) == pytest.approx(24 * 4.0)


@pytest.mark.parametrize("a", [2.0, 0.5, -1.0, -3.0, 0.0, 1e-3])
def test_scaling_law(a):
    """P(a x) = a^2 P(x) (Eq. 10), whatever the sign of a."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(6, 10))
    assert mean_power(a * x) == pytest.approx(a**2 * mean_power(x), rel=1e-12, abs=1e-12)


def test_mean_power_of_stack_averages_channels():
    rng = np.random.default_rng(2)
    stack = rng.normal(size=(3, 5, 4)) * np.array([1.0, 2.0, 5.0])[:, None, None]
    per_channel = [reference_power(channel) for channel in stack]
    assert mean_power(stack) == pytest.approx(np.mean(per_channel), rel=1e-12)
    # channels of very different power: the stack is the mean, not the sum or the max
    assert mean_power(stack) < max(per_channel)
    assert mean_power(stack) > min(per_channel)


def test_mean_power_accepts_integer_arrays_and_rejects_1d():
    assert mean_power(np.array([[1, 2], [3, 4]], dtype=np.uint8)) == pytest.approx(4 * np.mean([1, 4, 9, 16]))
    with pytest.raises(ValueError):
        mean_power(np.arange(5.0))


def test_normalized_one_hot():
    mask = np.array([[0, 1], [2, 1]])
    y = normalized_one_hot(mask, 3)
    assert y.shape == (3, 2, 2)
    expected = np.array(
        [
            [[1, -1], [-1, -1]],
            [[-1, 1], [-1, 1]],
            [[-1, -1], [1, -1]],
        ],
        dtype=np.float64,
    )
    np.testing.assert_array_equal(y, expected)


# --- b on tiny hand-made images ----------------------------------------------

IMAGE_A = np.array(
    [
        [0, 10, 20, 30],
        [40, 50, 60, 70],
        [80, 90, 100, 110],
        [120, 130, 140, 255],
    ],
    dtype=np.uint8,
)
MASK_A = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ],
    dtype=np.uint8,
)
IMAGE_B = np.array(
    [
        [200, 200, 200, 200],
        [200, 30, 30, 200],
        [200, 30, 30, 200],
        [200, 200, 200, 127],
    ],
    dtype=np.uint8,
)
MASK_B = np.array(
    [
        [0, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
    ],
    dtype=np.uint8,
)


def test_b_on_two_hand_made_images():
    stats = compute_balance_stats([(IMAGE_A, MASK_A), (IMAGE_B, MASK_B)], num_classes=2)
    assert isinstance(stats, BalanceStats)
    expected = reference_b([IMAGE_A, IMAGE_B], [MASK_A, MASK_B], num_classes=2)
    assert stats.b == pytest.approx(expected, rel=1e-12)
    assert float(stats) == stats.b
    assert stats.num_images == 2
    assert stats.resolution is None
    xa, xb = IMAGE_A / 127.5 - 1.0, IMAGE_B / 127.5 - 1.0
    assert stats.power_image == pytest.approx((reference_power(xa) + reference_power(xb)) / 2, rel=1e-12)
    # a {-1, 1} channel has x^2 = 1 everywhere: P = H*W = 16 for every channel
    assert stats.power_label == pytest.approx(16.0, rel=1e-12)
    # b is not the plain mean of per-image b values (it is a ratio of mean powers)
    b_each = [reference_b([i], [m], 2) for i, m in ((IMAGE_A, MASK_A), (IMAGE_B, MASK_B))]
    assert stats.b == pytest.approx(np.sqrt((b_each[0] ** 2 + b_each[1] ** 2) / 2), rel=1e-12)
    assert balancing_factor([(IMAGE_A, MASK_A), (IMAGE_B, MASK_B)], num_classes=2) == stats.b


def test_b_with_three_classes_and_images_of_different_sizes():
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, size=(6, 6), dtype=np.uint8), rng.integers(0, 256, size=(4, 10), dtype=np.uint8)]
    masks = [rng.integers(0, 3, size=(6, 6)).astype(np.uint8), rng.integers(0, 3, size=(4, 10)).astype(np.uint8)]
    stats = compute_balance_stats(zip(images, masks), num_classes=3)
    assert stats.b == pytest.approx(reference_b(images, masks, 3), rel=1e-12)
    # per image P(y) = H*W, averaged over the two images
    assert stats.power_label == pytest.approx((36 + 40) / 2, rel=1e-12)


def test_b_is_rms_of_x0_for_plus_minus_one_masks():
    """With {-1, 1} one-hot masks P(y0) = H*W, so by Parseval b = RMS of x0 over all pixels."""
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, size=(16, 16), dtype=np.uint8) for _ in range(5)]
    masks = [(rng.random((16, 16)) > 0.7).astype(np.uint8) for _ in range(5)]
    x0 = np.stack(images).astype(np.float64) / 127.5 - 1.0
    rms = float(np.sqrt(np.mean(x0**2)))
    assert compute_balance_stats(list(zip(images, masks)), num_classes=2).b == pytest.approx(rms, rel=1e-12)
    # a constant mid-grey image (x0 ~ 0) gives b ~ 0; pure black or white gives b = 1
    black = np.zeros((8, 8), dtype=np.uint8)
    white = np.full((8, 8), 255, dtype=np.uint8)
    mask = np.zeros((8, 8), dtype=np.uint8)
    assert compute_balance_stats([(black, mask)], num_classes=2).b == pytest.approx(1.0)
    assert compute_balance_stats([(white, mask), (black, mask)], num_classes=2).b == pytest.approx(1.0)
    assert compute_balance_stats([(np.full((8, 8), 127.5), mask)], num_classes=2).b == pytest.approx(0.0, abs=1e-12)


def test_accepted_input_forms_agree():
    """PIL images, uint8 arrays, RGB images with R=G=B, (image, mask) tuples and dicts give the same b."""
    expected = reference_b([IMAGE_A, IMAGE_B], [MASK_A, MASK_B], 2)
    as_pil = [(Image.fromarray(IMAGE_A), Image.fromarray(MASK_A)), (Image.fromarray(IMAGE_B), Image.fromarray(MASK_B))]
    as_rgb = [(np.repeat(IMAGE_A[..., None], 3, axis=-1), MASK_A), (Image.fromarray(IMAGE_B).convert("RGB"), MASK_B)]
    as_dicts = [{"image": IMAGE_A, "mask": MASK_A}, {"image": IMAGE_B, "mask": MASK_B}]
    as_other_keys = [{"sar": IMAGE_A, "label": MASK_A}, {"sar": IMAGE_B, "label": MASK_B}]
    assert compute_balance_stats(as_pil, num_classes=2).b == pytest.approx(expected, rel=1e-12)
    assert compute_balance_stats(as_rgb, num_classes=2).b == pytest.approx(expected, rel=1e-12)
    assert compute_balance_stats(as_dicts, num_classes=2).b == pytest.approx(expected, rel=1e-12)
    assert compute_balance_stats(as_other_keys, num_classes=2, image_key="sar", mask_key="label").b == pytest.approx(
        expected, rel=1e-12
    )


def test_b_of_a_datasets_dataset_reads_num_classes_from_features():
    from dakter_hf.data.features import segmentation_features

    features = segmentation_features(["sea", "oil", "ship"])
    mask_c = np.array([[0, 2], [1, 2]], dtype=np.uint8)
    image_c = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    dataset = datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(image_c)],
            "mask": [Image.fromarray(mask_c)],
            "id": ["c"],
            "source": ["test"],
            "classes": [[0, 1, 2]],
        },
        features=features,
    )
    stats = compute_balance_stats(dataset)
    assert stats.b == pytest.approx(reference_b([image_c], [mask_c], 3), rel=1e-12)
    assert stats.num_images == 1
    # a dataset whose mask holds class id 2 with only 2 classes given explicitly: error
    with pytest.raises(ValueError, match="class id 2"):
        compute_balance_stats(dataset, num_classes=2)


# --- resolution ---------------------------------------------------------------


def test_resolution_resizes_first():
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, size=(16, 16), dtype=np.uint8) for _ in range(3)]
    masks = [(rng.random((16, 16)) > 0.5).astype(np.uint8) for _ in range(3)]
    native = compute_balance_stats(list(zip(images, masks)), num_classes=2)
    small = compute_balance_stats(list(zip(images, masks)), num_classes=2, resolution=4)
    assert small.resolution == 4 and native.resolution is None
    assert small.num_images == native.num_images == 3
    assert small.power_label == pytest.approx(16.0)  # 4 x 4
    assert native.power_label == pytest.approx(256.0)  # 16 x 16
    # bilinear downsampling averages the white noise: smaller RMS, smaller b
    assert small.b < native.b
    resized = [np.asarray(Image.fromarray(image).resize((4, 4), Image.BILINEAR)) for image in images]
    resized_masks = [np.asarray(Image.fromarray(mask).resize((4, 4), Image.NEAREST)) for mask in masks]
    assert small.b == pytest.approx(reference_b(resized, resized_masks, 2), rel=1e-12)
    # resizing to the native size changes nothing
    same = compute_balance_stats(list(zip(images, masks)), num_classes=2, resolution=16)
    assert same.b == pytest.approx(native.b, rel=1e-12)


def test_resolution_upsampling_counts_and_keeps_label_power():
    image = np.tile(np.array([[0, 255], [255, 0]], dtype=np.uint8), (2, 2))
    mask = np.zeros((4, 4), dtype=np.uint8)
    stats = compute_balance_stats([(image, mask)] * 2, num_classes=2, resolution=8)
    assert stats.num_images == 2
    assert stats.power_label == pytest.approx(64.0)


# --- errors -------------------------------------------------------------------


def test_empty_input_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        compute_balance_stats([], num_classes=2)
    with pytest.raises(ValueError, match="empty"):
        compute_balance_stats((pair for pair in []), num_classes=2)


def test_num_classes_required_for_a_plain_iterable():
    with pytest.raises(ValueError, match="num_classes"):
        compute_balance_stats([(IMAGE_A, MASK_A)])
    with pytest.raises(ValueError, match="num_classes"):
        compute_balance_stats([(IMAGE_A, MASK_A)], num_classes=1)


def test_mask_class_id_out_of_range():
    bad = MASK_A.copy()
    bad[0, 0] = 2
    with pytest.raises(ValueError, match="class id 2"):
        compute_balance_stats([(IMAGE_A, MASK_A), (IMAGE_B, bad)], num_classes=2)
    # fine with 3 classes
    compute_balance_stats([(IMAGE_B, bad)], num_classes=3)


def test_image_mask_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        compute_balance_stats([(IMAGE_A, np.zeros((4, 5), dtype=np.uint8))], num_classes=2)
    with pytest.raises(ValueError):
        compute_balance_stats([(np.zeros((4, 4, 2), dtype=np.uint8), MASK_A)], num_classes=2)  # not a grey image


# --- streaming ----------------------------------------------------------------


def test_streams_a_generator_once():
    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, size=(8, 8), dtype=np.uint8) for _ in range(20)]
    masks = [(rng.random((8, 8)) > 0.5).astype(np.uint8) for _ in range(20)]
    produced = []

    def pairs():
        for index in range(20):
            produced.append(index)
            yield images[index], masks[index]

    generator = pairs()
    stats = compute_balance_stats(generator, num_classes=2)
    assert stats.num_images == 20
    assert produced == list(range(20))  # every pair read exactly once
    assert stats.b == pytest.approx(reference_b(images, masks, 2), rel=1e-12)
    assert next(generator, None) is None  # consumed, not copied up front and re-read
