"""FID/sFID: torchmetrics' Fréchet distance on our batches, weights lookup, the sFID tap on Inception."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from dakter_hf.evaluation.fid import (
    WEIGHTS_NAMES,
    WEIGHTS_URL,
    InceptionWeightsMissing,
    find_inception_weights,
    frechet_distances,
)


class PixelFeatures(torch.nn.Module):
    """The pixels of the first channel are the features: their statistics are known exactly."""

    def forward(self, images):
        return images[:, 0].flatten(1).double()


class TinyConv(torch.nn.Module):
    """Fixed random conv + pooling: a stand-in for Inception (pooled or spatial rows)."""

    def __init__(self, spatial: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.spatial = spatial

    def forward(self, images):
        maps = torch.relu(self.conv(images.float()))
        return torch.nn.functional.adaptive_avg_pool2d(maps, 3 if self.spatial else 1).flatten(1)


def reference_frechet(a, b):
    """Independent Fréchet distance of two feature sets (numpy/scipy)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def gaussian_images(rng, mean, std, n=3000):
    """n uint8 images of 1x4 pixels drawn from N(mean, std^2 I)."""
    return np.clip(np.rint(rng.normal(mean, std, (n, 1, 4))), 0, 255).astype(np.uint8)


def speckle_scenes(rng, level, n=48, size=16):
    """Grey PIL scenes: a constant backscatter level times exponential (1-look) speckle."""
    return [
        Image.fromarray(np.clip(level * rng.exponential(1.0, (size, size)), 0, 255).astype(np.uint8), "L")
        for _ in range(n)
    ]


def test_fid_matches_independent_and_closed_form_gaussian_values():
    rng = np.random.default_rng(0)
    real, generated = gaussian_images(rng, 100, 20), gaussian_images(rng, 110, 30)
    result = frechet_distances(
        list(real), list(generated), feature=PixelFeatures(), batch_size=500, show_progress=False
    )
    exact = reference_frechet(
        real.reshape(len(real), -1).astype(float), generated.reshape(len(generated), -1).astype(float)
    )
    assert result["fid"] == pytest.approx(exact, rel=1e-6)
    assert result["fid"] == pytest.approx(4 * (10**2 + (20 - 30) ** 2), rel=0.1)  # ||mu1-mu2||^2 + D (s1-s2)^2
    assert result["sfid"] is None and result["num_real"] == result["num_generated"] == 3000
    assert (
        abs(
            frechet_distances(list(real), list(real), feature=PixelFeatures(), batch_size=500, show_progress=False)[
                "fid"
            ]
        )
        < 1e-6
    )


def test_fid_and_sfid_separate_distributions_and_warn_at_small_n():
    rng = np.random.default_rng(1)
    real, same, dark = speckle_scenes(rng, 100), speckle_scenes(rng, 100), speckle_scenes(rng, 40)
    kwargs = {
        "feature": TinyConv(),
        "spatial_feature": TinyConv(spatial=True),
        "batch_size": 16,
        "show_progress": False,
    }
    identical, close, far = (frechet_distances(real, other, **kwargs) for other in (real, same, dark))
    for key in ("fid", "sfid"):
        assert abs(identical[key]) < 1e-6 * far[key]
        assert far[key] > 5 * close[key] > 0  # sfid: 72 dims > 48 images, so "close" keeps a small-sample bias
    assert far["feature_extractor"] == "TinyConv" and far["num_real"] == 48
    assert any("biased" in note for note in far["notes"]) and any("sfid uses 72-dim" in note for note in far["notes"])
    assert not any("Inception" in note for note in far["notes"])


def test_grey_images_become_three_equal_uint8_channels_in_same_size_batches():
    seen = []

    class Record(torch.nn.Module):
        def forward(self, images):
            seen.append(images.clone())
            return images[:, 0].float().mean((1, 2))[:, None]

    images = [
        Image.new("L", (8, 8), 10),
        np.full((8, 8), 20, np.uint8),
        np.full((6, 6), 30.4),
        np.full((6, 6), 40, np.uint8),
    ]
    result = frechet_distances(images, images, feature=Record(), batch_size=4, show_progress=False)
    assert [tuple(batch.shape) for batch in seen[:2]] == [(2, 3, 8, 8), (2, 3, 6, 6)]
    assert all(batch.dtype == torch.uint8 and bool((batch == batch[:, :1]).all()) for batch in seen)
    assert seen[1][0, 0, 0, 0] == 30 and result["num_generated"] == 4 and abs(result["fid"]) < 1e-9


def test_missing_weights_path_says_how_to_get_them():
    with pytest.raises(InceptionWeightsMissing) as error:
        find_inception_weights("/nonexistent")
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert "/nonexistent" in message and WEIGHTS_URL in message and "weights=PATH" in message


def test_missing_weights_in_empty_cache_then_found(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    with pytest.raises(InceptionWeightsMissing, match=str(cache / WEIGHTS_NAMES[0])):
        find_inception_weights()
    cache.mkdir(parents=True)
    (cache / WEIGHTS_NAMES[1]).write_bytes(b"")
    assert find_inception_weights() == str(cache / WEIGHTS_NAMES[1])


def test_inception_without_torch_fidelity_is_a_clear_import_error(tmp_path, monkeypatch):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)  # import fails
    with pytest.raises(ImportError, match="pip install torch-fidelity"):
        frechet_distances(
            [np.zeros((4, 4), np.uint8)] * 2,
            [np.zeros((4, 4), np.uint8)] * 2,
            weights=str(weights),
            show_progress=False,
        )


def test_sfid_tap_is_mixed_6d_branch1x1_first_7_channels(tmp_path, monkeypatch):
    inception_module = pytest.importorskip(
        "torch_fidelity.feature_extractor_inceptionv3", reason="torch-fidelity (+ torchvision) not importable"
    )
    from dakter_hf.evaluation.fid import TFInceptionFeatures

    monkeypatch.setattr(
        inception_module.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, *a, **k: None
    )
    torch.save({}, tmp_path / "random.pth")  # random weights: no file to download
    features = TFInceptionFeatures(str(tmp_path / "random.pth"))
    taps = []
    features.inception.Mixed_6d.branch1x1.register_forward_hook(lambda module, inputs, output: taps.append(output))
    out = features(torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8))
    assert out["fid"].shape == (2, 2048) and out["sfid"].shape == (2, 7 * 17 * 17)
    assert taps[0].shape == (2, 192, 17, 17)
    assert torch.equal(out["sfid"], taps[0][:, :7].permute(0, 2, 3, 1).reshape(2, -1))
