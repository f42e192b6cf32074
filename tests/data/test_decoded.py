"""Decode-once training data (dakter_hf.data.decoded) and the fast-training switches (dakter_hf.joint.speed).

The decode-once path must give exactly the batches of the per-step path
(`ResizedPairs` + `_augmented`, DataLoader) for the same seed and micro-step.
"""

import contextlib
import glob
import os

import pytest
import torch
from helpers import REPO_ROOT
from joint_helpers import BASE, make_args
from safetensors.torch import load_file

from dakter_hf.data.decoded import DecodedPairs, dihedral_index_maps
from dakter_hf.data.sources import load_source
from dakter_hf.data.transforms import random_dihedral
from dakter_hf.joint.arguments import JointTrainingArguments
from dakter_hf.joint.batching import BatchPlan, micro_batches
from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.joint.speed import resolve_mixed_precision
from dakter_hf.joint.training import train


torch.set_num_threads(1)


class CpuAccelerator:
    device = torch.device("cpu")
    process_index = 0
    is_local_main_process = False

    @contextlib.contextmanager
    def main_process_first(self):
        yield


def batches_of(split, tmp_path, steps, start=0, **overrides):
    args = make_args(tmp_path, **overrides)
    objective = DAKTerObjective(2)
    plan = BatchPlan(len(split), args.train_batch_size, 1, 0, args.seed, start=start)
    stream = micro_batches(args, split, plan, CpuAccelerator(), objective, first_micro_step=start)
    out = [next(stream) for _ in range(steps)]
    stream.close()
    return out


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for step, (x, y) in enumerate(zip(a, b)):
        for name, p, q in zip(("images", "masks", "timesteps", "noise"), x, y):
            assert p.dtype == q.dtype and p.shape == q.shape, (step, name)
            assert torch.equal(p, q), f"micro-step {step}: {name} differ"


@pytest.mark.parametrize("augment", [True, False])
@pytest.mark.parametrize("cache", ["memory", "mmap"])
def test_decode_once_gives_the_same_batches(tmp_path, augment, cache):
    split = load_source("simulate:24", num_classes=5, size=24, seed=1)["train"]
    common = {"resolution": 16, "augment": augment, "seed": 7, "num_classes": 5}
    # 13 micro-steps cross two epochs (24 rows / batch 4 = 6 per epoch) and start mid-run
    reference = batches_of(split, tmp_path / "a", 13, start=3, data_cache="none", **common)
    decoded = batches_of(split, tmp_path / "b", 13, start=3, data_cache=cache, **common)
    assert_same_batches(reference, decoded)
    if cache == "mmap":
        files = sorted(glob.glob(str(tmp_path / "b" / "data_cache" / "*.npy")))
        assert len(files) == 2 and not [n for n in os.listdir(tmp_path / "b" / "data_cache") if ".tmp" in n]
        again = batches_of(split, tmp_path / "b", 4, start=3, data_cache=cache, **common)  # reuses the files
        assert_same_batches(reference[:4], again)


def test_decode_once_on_real_sos_jpegs(tmp_path, sos_root):
    """Real JPEG/PNG rows at a resolution that needs resizing (256 -> 48 px)."""
    split = load_source(f"sos:{sos_root}", sensor="palsar", split="train")["train"].select(range(12))
    common = {"resolution": 48, "augment": True, "seed": 2}
    assert_same_batches(
        batches_of(split, tmp_path / "a", 5, data_cache="none", **common),
        batches_of(split, tmp_path / "b", 5, data_cache="memory", **common),
    )


def test_index_maps_are_random_dihedral():
    image = torch.arange(36.0).view(1, 6, 6)
    maps = dihedral_index_maps(6)
    for code in range(8):
        k, flip = divmod(code, 2)
        expected = image.flip(-1) if flip else image
        expected = torch.rot90(expected, k, dims=(-2, -1))
        assert torch.equal(image.view(-1)[maps[code]].view(1, 6, 6), expected)
    # random_dihedral draws k, then flip, per sample: dihedral_draws consumes the generator the same way
    from dakter_hf.data.decoded import dihedral_draws

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    codes = dihedral_draws(6, g1)
    for code in codes:
        out, _ = random_dihedral(image, image, g2)
        k, flip = divmod(code, 2)
        assert torch.equal(out, torch.rot90(image.flip(-1) if flip else image, k, dims=(-2, -1)))
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_training_runs_are_identical_with_and_without_the_cache(tmp_path):
    weights = {}
    for cache in ("none", "auto"):
        out = tmp_path / cache
        train(
            JointTrainingArguments(
                **{**BASE, "output_dir": str(out), "max_train_steps": 4, "data_cache": cache, "seed": 4}
            )
        )
        weights[cache] = load_file(str(out / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))
    for name in weights["none"]:
        assert torch.equal(weights["none"][name], weights["auto"][name]), name


def test_channels_last_trains_saves_and_resumes(tmp_path):
    common = {"channels_last": True, "checkpointing_steps": 2, "seed": 1}
    straight = train(
        JointTrainingArguments(**{**BASE, "output_dir": str(tmp_path / "a"), "max_train_steps": 4, **common})
    )
    train(JointTrainingArguments(**{**BASE, "output_dir": str(tmp_path / "b"), "max_train_steps": 2, **common}))
    resumed = train(
        JointTrainingArguments(
            **{
                **BASE,
                "output_dir": str(tmp_path / "b"),
                "max_train_steps": 4,
                "resume_from_checkpoint": "latest",
                **common,
            }
        )
    )
    a = load_file(os.path.join(straight, "unet", "diffusion_pytorch_model.safetensors"))
    b = load_file(os.path.join(resumed, "unet", "diffusion_pytorch_model.safetensors"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_mixed_precision_default():
    assert JointTrainingArguments.mixed_precision == "auto"
    expected = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    assert resolve_mixed_precision("auto") == expected
    assert resolve_mixed_precision("fp16") == "fp16" and resolve_mixed_precision("no") == "no"
    with pytest.raises(ValueError, match="mixed_precision"):
        resolve_mixed_precision("fp8")


def test_defaults_are_v_on_zero_terminal_snr_and_paper_configs_are_x0():

    from dakter_hf.joint.arguments import parse_args

    defaults = JointTrainingArguments()
    assert defaults.image_prediction == "v_prediction" and defaults.zero_terminal_snr is True
    root = REPO_ROOT / "configs"
    stage1, stage2 = (
        parse_args(["--config", str(root / "paper_stage1.yaml")]),
        parse_args(["--config", str(root / "paper_stage2.yaml")]),
    )
    for args in (stage1, stage2):
        assert args.image_prediction == "sample" and args.zero_terminal_snr is False and args.unet_preset == "paper"
    assert (stage1.resolution, stage1.learning_rate, stage1.train_batch_size, stage1.max_train_steps) == (
        128,
        2e-5,
        64,
        100000,
    )
    assert (stage2.resolution, stage2.learning_rate, stage2.train_batch_size, stage2.max_train_steps) == (
        256,
        1e-5,
        16,
        50000,
    )
    for name in ("sos128_gpu.yaml", "sos256_stage2_gpu.yaml"):
        args = parse_args(["--config", str(root / name)])
        assert args.image_prediction == "v_prediction" and args.zero_terminal_snr is True


def test_background_thread_prepares_the_same_micro_batches():
    from dakter_hf.data.decoded import BatchStream
    from dakter_hf.joint.batching import step_generator

    split = load_source("simulate:16", num_classes=2, size=16, seed=0)["train"]
    decoded = DecodedPairs.from_split(split, 16, mode="memory")
    streams = [
        BatchStream(
            decoded,
            BatchPlan(16, 4, 1, 0, 3, start=5),
            lambda k: step_generator(3, k, 0),
            5,
            True,
            1000,
            3,
            background=bg,
        )
        for bg in (False, True)
    ]
    for _ in range(7):
        a, b = (next(s) for s in streams)
        for name in ("images", "masks", "codes", "timesteps", "noise"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
    for stream in streams:
        stream.close()
