"""Overlapping-window inference: plan geometry, exact stitching, blending, limits."""

import pytest
import torch

from dakter_hf.students.tiling import (
    blend_weights,
    plan_tiles,
    predict_tiled,
    predict_whole,
    stitch_weights_map,
)


def coverage(plan):
    count = torch.zeros(plan.padded_height, plan.padded_width, dtype=torch.int64)
    for y, x in plan.origins:
        count[y : y + plan.window, x : x + plan.window] += 1
    return count[: plan.height, : plan.width]


def pixelwise_predict(in_channels=2, classes=4, seed=0):
    """Softmax of a fixed 1x1 conv: each output pixel depends on its own input pixel only."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(in_channels, classes, 1)
    return lambda x: torch.softmax(conv(x), dim=1)


def context_predict(seed=0):
    """Two zero-padded 3x3 convs: receptive radius 2, so outputs within 2 px of a window edge change."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(8, 3, 3, padding=1)
    )
    for p in net.parameters():
        p.data *= 3  # pronounced border effects and well-separated classes
    return lambda x: torch.softmax(net(x), dim=1)


def smooth_image(height, width, seed=0):
    """Blobby scene (like slicks on sea) so that argmax regions are large."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 1, height // 8 + 2, width // 8 + 2, generator=g)
    blobs = torch.nn.functional.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)
    return (blobs + 0.1 * torch.randn(1, 1, height, width, generator=g))[0]


def interior_mask(plan, margin):
    """Pixels at least `margin` from every edge, not on the image border, of every window covering them."""
    bad = torch.zeros(plan.height, plan.width, dtype=torch.bool)
    n = plan.window
    for y, x in plan.origins:
        local = torch.zeros(n, n, dtype=torch.bool)
        if y > 0:
            local[:margin] = True
        if y + n < plan.height:
            local[n - margin :] = True
        if x > 0:
            local[:, :margin] = True
        if x + n < plan.width:
            local[:, n - margin :] = True
        bad[y : y + n, x : x + n] |= local
    return ~bad


# 1. plan geometry


@pytest.mark.parametrize(
    "height,width,window,overlap",
    [(1000, 700, 128, 0.25), (129, 130, 128, 0.5), (70, 90, 128, 0.25), (500, 60, 64, 0.0), (257, 999, 32, 0.9)],
)
def test_plan_covers_every_pixel_inside_image(height, width, window, overlap):
    plan = plan_tiles(height, width, window, overlap=overlap)
    assert plan.stride == window - round(overlap * window)
    assert len(set(plan.origins)) == len(plan.origins)
    assert bool((coverage(plan) > 0).all())
    ys = sorted({y for y, _ in plan.origins})
    xs = sorted({x for _, x in plan.origins})
    assert ys[0] == 0 and xs[0] == 0
    assert all(0 <= y <= max(height - window, 0) for y in ys)
    assert all(0 <= x <= max(width - window, 0) for x in xs)
    # last windows end exactly at the border (or the single window covers a small image)
    assert ys[-1] + window == max(height, window)
    assert xs[-1] + window == max(width, window)
    # consecutive windows never step further than the stride
    assert all(b - a <= plan.stride for a, b in zip(ys, ys[1:]))
    assert len(plan.origins) == len(ys) * len(xs)


def test_plan_without_overlap_is_plain_grid():
    plan = plan_tiles(512, 384, 128, overlap=0.0)
    assert plan.stride == 128
    assert plan.origins == [(y, x) for y in (0, 128, 256, 384) for x in (0, 128, 256)]
    assert bool((coverage(plan) == 1).all())


def test_plan_explicit_stride_and_small_image():
    assert plan_tiles(200, 200, 100, stride=60).origins == [(y, x) for y in (0, 60, 100) for x in (0, 60, 100)]
    assert plan_tiles(70, 90, 128).origins == [(0, 0)]


@pytest.mark.parametrize("overlap", [-0.1, 1.0, 1.5])
def test_bad_overlap_raises(overlap):
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(100, 100, 32, overlap=overlap)


def test_bad_stride_raises():
    with pytest.raises(ValueError, match="stride"):
        plan_tiles(100, 100, 32, stride=33)
    with pytest.raises(ValueError, match="stride"):
        plan_tiles(100, 100, 32, stride=0)


def test_blend_weights_peak_centre_positive_border():
    w = blend_weights(65)
    assert w.shape == (65, 65)
    assert float(w.min()) > 0
    assert float(w[32, 32]) == pytest.approx(1.0)
    assert float(w[0, 0]) < 0.01 and float(w[0, 32]) < 0.01
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.T)
    assert bool((blend_weights(16, "uniform") == 1).all())
    with pytest.raises(ValueError, match="hann"):
        blend_weights(16, "gauss")


def test_stitch_weights_map_is_sum_of_window_weights():
    plan = plan_tiles(100, 80, 32, overlap=0.5)
    total = stitch_weights_map(plan, "uniform")
    assert total.shape == (100, 80)
    assert torch.equal(total, coverage(plan).float())
    assert float(stitch_weights_map(plan, "hann").min()) > 0


# 2. exact stitching for a per-pixel model


@pytest.mark.parametrize("height,width", [(1000, 700), (70, 90), (100, 300)])
@pytest.mark.parametrize("weights", ["hann", "uniform"])
def test_pixelwise_model_tiles_exactly(one_thread, height, width, weights):
    predict = pixelwise_predict()
    image = torch.randn(2, height, width, generator=torch.Generator().manual_seed(1))
    tiled = predict_tiled(image, predict, window=128, overlap=0.25, weights=weights)
    whole = predict_whole(image, predict)
    assert tiled.shape == whole.shape == (4, height, width)
    assert tiled.dtype == torch.float32
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)


# 3. a model with spatial context


def test_context_model_agrees_in_window_interiors(one_thread):
    predict = context_predict()
    height, width, window = 300, 260, 64
    image = smooth_image(height, width)
    tiled = predict_tiled(image, predict, window=window, overlap=0.25)
    whole = predict_whole(image, predict)
    plan = plan_tiles(height, width, window, overlap=0.25)

    inside = interior_mask(plan, margin=2)
    assert inside.float().mean() > 0.8
    err = (tiled - whole).abs().amax(0)
    assert float(err[inside].max()) < 1e-4
    # the window borders really do differ, so the interior check above is not vacuous
    assert float(err[~interior_mask(plan, margin=1)].max()) > 1e-3

    agree = (tiled.argmax(0) == whole.argmax(0)).float().mean()
    assert float(agree) >= 0.99


def test_hann_blending_beats_uniform_near_seams(one_thread):
    """Down-weighting window borders lets the neighbour's centre decide at the seams."""
    predict = context_predict(seed=3)
    image = smooth_image(256, 256, seed=3)
    whole = predict_whole(image, predict)
    hann = (predict_tiled(image, predict, window=64, weights="hann") - whole).abs().mean()
    uniform = (predict_tiled(image, predict, window=64, weights="uniform") - whole).abs().mean()
    assert float(hann) < 0.5 * float(uniform)


# 4. limits and batching


def test_max_pixels_refused_before_any_prediction():
    def never(_):
        raise AssertionError("predict must not run for a refused image")

    image = torch.zeros(1, 300, 200)
    with pytest.raises(ValueError, match=r"300x200.*60000.*59999"):
        predict_tiled(image, never, window=64, max_pixels=59_999)
    out = predict_tiled(image, pixelwise_predict(1, 2), window=64, max_pixels=60_000)
    assert out.shape == (2, 300, 200)


def test_batch_size_does_not_change_result(one_thread):
    predict = context_predict()
    image = smooth_image(200, 170, seed=2)
    one = predict_tiled(image, predict, window=64, batch_size=1)
    eight = predict_tiled(image, predict, window=64, batch_size=8)
    torch.testing.assert_close(one, eight, rtol=0, atol=1e-6)


def test_predict_sees_batches_of_window_size():
    shapes = []
    base = pixelwise_predict(1, 2)

    def spy(x):
        shapes.append(tuple(x.shape))
        return base(x)

    predict_tiled(torch.randn(1, 100, 100), spy, window=40, overlap=0.0, batch_size=4)
    # 100 = 0, 40, 60 per axis -> 9 windows -> batches 4, 4, 1
    assert shapes == [(4, 1, 40, 40), (4, 1, 40, 40), (1, 1, 40, 40)]


def test_wrong_predict_output_shape_raises():
    with pytest.raises(ValueError, match="predict must return"):
        predict_tiled(torch.randn(1, 100, 100), lambda x: x[:, :, :10], window=40)


def test_output_is_detached_and_progress_runs(one_thread):
    net = torch.nn.Conv2d(1, 2, 1)
    out = predict_tiled(torch.randn(1, 90, 90), lambda x: torch.softmax(net(x), 1), window=32, progress=True)
    assert not out.requires_grad


# 5. probabilities stay probabilities


@pytest.mark.parametrize("height,width,window", [(300, 260, 64), (50, 200, 64), (3, 3, 64)])
@pytest.mark.parametrize("weights", ["hann", "uniform"])
def test_output_sums_to_one(one_thread, height, width, window, weights):
    tiled = predict_tiled(smooth_image(height, width), context_predict(), window=window, weights=weights)
    assert tiled.shape == (3, height, width)
    assert float(tiled.min()) >= 0
    torch.testing.assert_close(tiled.sum(0), torch.ones(height, width), rtol=0, atol=1e-5)


def test_small_image_is_reflect_padded():
    """A 40x50 image in a 64 window: the model must see the reflected scene, not zeros."""
    seen = []

    def spy(x):
        seen.append(x.clone())
        return torch.ones(x.shape[0], 1, *x.shape[-2:])

    image = torch.arange(40 * 50, dtype=torch.float32).reshape(1, 40, 50)
    out = predict_tiled(image, spy, window=64)
    assert out.shape == (1, 40, 50)
    (batch,) = seen
    expected = torch.nn.functional.pad(image[None], (0, 14, 0, 24), mode="reflect")
    torch.testing.assert_close(batch, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_image_device():
    predict = pixelwise_predict()
    image = torch.randn(2, 150, 130)
    cpu = predict_tiled(image, predict, window=64)
    torch.manual_seed(0)
    net = torch.nn.Conv2d(2, 4, 1).cuda()
    gpu = predict_tiled(image.cuda(), lambda x: torch.softmax(net(x), dim=1), window=64)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
