"""A synthetic example scene for the Segment tab, so the tab can be tried without a SAR file.

Drawn by `dakter_hf.data.simulate` (clearly not real data) once per process and kept
in the Space's work folder.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from dakter_hf.utils.files import atomic_path


EXAMPLE_SIZE, EXAMPLE_SEED = 256, 7
EXAMPLE_NAME = "synthetic_example_scene.png"


def write_example_scene(workdir: str) -> str:
    """Path of a PNG holding one simulated 2-class SAR scene (written atomically on first use)."""
    path = os.path.join(workdir, EXAMPLE_NAME)
    if not os.path.isfile(path):
        from dakter_hf.data.simulate import simulate_sar

        scene = simulate_sar(1, num_classes=2, size=EXAMPLE_SIZE, seed=EXAMPLE_SEED)["train"][0]["image"]
        with atomic_path(path) as temporary:
            Image.fromarray(np.asarray(scene.convert("L"))).save(temporary, format="PNG")
    return path
