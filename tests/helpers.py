"""Plain-numpy references and shared locations for the tests."""

import os
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


def sos_root_candidates():
    """Where the SOS subset may be: $DAKTER_SOS_ROOT, next to the checkout, or the workspace copy."""
    if os.environ.get("DAKTER_SOS_ROOT"):
        return [os.environ["DAKTER_SOS_ROOT"]]
    return [str(REPO_ROOT / ".." / "shared" / "data" / "sos"), "/work/shared/data/sos"]


def find_sos_root():
    return next((root for root in sos_root_candidates() if os.path.isdir(os.path.join(root, "train", "palsar"))), None)


def reference_power(array):
    """Mean over frequencies of |DFT|^2 of one 2-D array, straight from np.fft.fft2."""
    spectrum = np.fft.fft2(np.asarray(array, dtype=np.float64))
    return float(np.mean(np.abs(spectrum) ** 2))


def reference_b(images, masks, num_classes):
    """b = sqrt(mean_i P(x_i) / mean_i P(y_i)) with x = img / 127.5 - 1 and y = 2 * onehot - 1.

    P(y_i) is the mean of the per-channel powers of the one-hot mask. `images` are
    uint8 grey arrays (0..255), `masks` integer class-id arrays.
    """
    power_x, power_y = [], []
    for image, mask in zip(images, masks):
        x = np.asarray(image, dtype=np.float64) / 127.5 - 1.0
        mask = np.asarray(mask)
        channels = [2.0 * (mask == c).astype(np.float64) - 1.0 for c in range(num_classes)]
        power_x.append(reference_power(x))
        power_y.append(np.mean([reference_power(channel) for channel in channels]))
    return float(np.sqrt(np.mean(power_x) / np.mean(power_y)))


