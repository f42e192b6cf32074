"""Plain-numpy references, shared locations and small builders for the tests."""

import ast
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]


def assert_old_path_forwards(old_module, new_package, names, homes):
    """Importing `old_module` (a path from before a split) warns toward `new_package` and forwards every name.

    homes: the modules the names now live in; each forwarded name must be that module's very object.
    """
    sys.modules.pop(old_module, None)
    with pytest.warns(FutureWarning, match=new_package):
        old = importlib.import_module(old_module)
    home = {name: module for module in homes for name in dir(module)}
    for name in names:
        assert getattr(old, name) is getattr(home[name], name), name


def assert_imports_none_of(package, subpackages):
    """No module file of `package` imports (at any depth) `dakter_hf.<s>` for s in `subpackages`."""
    forbidden = tuple(f"dakter_hf.{name}" for name in subpackages)
    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not [name for name in names if name.startswith(forbidden)], f"{path.name} imports {names}"


def sos_root_candidates():
    """Where the SOS subset may be: $DAKTER_SOS_ROOT, else shared/data/sos next to the checkout."""
    if os.environ.get("DAKTER_SOS_ROOT"):
        return [os.environ["DAKTER_SOS_ROOT"]]
    return [str(REPO_ROOT.parent / "shared" / "data" / "sos")]


def find_sos_root():
    return next((root for root in sos_root_candidates() if os.path.isdir(os.path.join(root, "train", "palsar"))), None)


def tree(folder):
    """{relative path: bytes} of every file under `folder` (what "nothing lost or mixed" compares)."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = handle.read()
    return found


def tiny_pipeline(v_prediction=False):
    """An untrained `tiny` DAKTerPipeline at 16 px with b = 0.4 (seeded: the same weights every time).

    x0 on linear betas with classes background/oil; `v_prediction`: v on zero-terminal-SNR betas, no class names.
    """
    import torch  # here, not at the top: helpers.py is imported by every test module, most need no model

    from dakter_hf.joint.objective import DAKTerObjective
    from dakter_hf.joint.unet import make_joint_unet
    from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline

    torch.manual_seed(0)
    if v_prediction:
        sampler = DAKTerObjective(2, 0.4, image_prediction_type="v", zero_terminal_snr=True).sampling_scheduler()
        unet = make_joint_unet(2, "tiny", sample_size=16)
        return DAKTerPipeline(unet=unet, scheduler=sampler, balancing_factor=0.4, image_prediction_type="v_prediction")
    unet = make_joint_unet(2, "tiny", sample_size=16)
    sampler = DAKTerObjective(2, 0.4).sampling_scheduler()
    return DAKTerPipeline(unet=unet, scheduler=sampler, balancing_factor=0.4, class_names=["background", "oil"])


def generate_cli(pipeline, out, flags):
    """`dakter generate --pipeline PIPELINE --out OUT FLAGS` in this process (`flags` split at spaces); exit code."""
    from dakter_hf.cli import main  # here, not at the top: most test modules never run the CLI

    return main(["generate", "--pipeline", str(pipeline), "--out", str(out), *flags.split()])


def accelerate_launch(*args, processes=1):
    """The command line of `accelerate launch` on one machine, `processes` processes, no mixed precision or dynamo."""
    fixed = f"--num_processes {processes} --num_machines 1 --mixed_precision no --dynamo_backend no".split()
    return [sys.executable, "-m", "accelerate.commands.launch", *fixed, *args]


def run_generate(pipeline, out, *extra):
    """`dakter generate` of 2 samples, 2 steps, one shard of 2 on the CPU; its exit code."""
    from dakter_hf.cli import main  # here, not at the top: most test modules never run the CLI

    args = ["--pipeline", pipeline, "--out", str(out), "-n", "2", "--steps", "2", "--batch-size", "2"]
    return main(["generate", *args, "--shard-size", "2", "--device", "cpu", *extra])


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


class CountingPipe:
    """Stand-in for a loaded pipeline that counts calls and can 'die' on call number `fail_on`."""

    def __init__(self, pipe, fail_on=None):
        self.pipe, self.fail_on, self.calls = pipe, fail_on, 0

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt("killed")
        return self.pipe(*args, **kwargs)
