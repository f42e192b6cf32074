"""Tiny students and datasets for the student tests (built in code; nothing downloads)."""

import json
import os
import subprocess
import sys

import numpy as np
import torch


ID2LABEL = {0: "background", 1: "oil"}

# config overrides that make each family small enough for CPU tests
TINY_OVERRIDES = {
    "segformer-b0": {
        "hidden_sizes": [8, 16, 16, 16],
        "depths": [1, 1, 1, 1],
        "num_attention_heads": [1, 1, 1, 1],
        "sr_ratios": [1, 1, 1, 1],
        "decoder_hidden_size": 16,
    },
    "mask2former-swin-tiny": {
        "backbone": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4},
        "hidden_dim": 32,
        "feature_size": 32,
        "mask_feature_size": 32,
        "encoder_layers": 1,
        "decoder_layers": 2,
        "num_queries": 8,
        "dim_feedforward": 64,
        "encoder_feedforward_dim": 64,
        "num_attention_heads": 2,
    },
    "deeplabv3plus-resnet18": {
        "aspp_channels": 16,
        "decoder_channels": 16,
        "low_level_channels": 8,
        "atrous_rates": [1, 2, 3],
    },
    "cbdnet-resnet34": {
        "backbone": {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1], "embedding_size": 8},
        "final_channels": 8,
    },
}


def tiny_student_flags(real):
    """`train_student.py` flags of a real-only tiny SegFormer at 32 px (the launcher tests' student)."""
    tiny = json.dumps(TINY_OVERRIDES["segformer-b0"])
    return [*f"--real {real} --mode real --student segformer-b0 --resolution 32".split(), "--student_config", tiny]


def launch_student_command(real):
    """`accelerate launch --num_processes 1 --cpu training/train_student.py` with the tiny student's flags."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training", "train_student.py")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu", script]
    return [*launch, *tiny_student_flags(real)]


def run_without_dakter(script, *args, tmp_path):
    """Run `script` (python source) with `args` in a fresh interpreter, offline, with the checkout off sys.path.

    For the checks that a saved student loads with plain transformers. Asserts it succeeded; returns stdout.
    """
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), OMP_NUM_THREADS="1", PYTHONPATH=""
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=tmp_path,  # keep the checkout off sys.path
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def assert_gradients_reach(model, names):
    """Each named parameter of `model` got a non-zero gradient from the last backward pass."""
    for name in names:
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def save_for_reload(model, folder, size=32):
    """Save `model` after one train-mode pass (BN statistics off their defaults), in eval mode, with
    check.pt = {"x", "logits"} of two inputs for a reload to compare against; returns (x, logits)."""
    model.train()
    model(pixel_values=torch.randn(4, 1, size, size))
    model.eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        logits = model(pixel_values=x).logits
    model.save_pretrained(folder)
    torch.save({"x": x, "logits": logits}, folder / "check.pt")
    return x, logits


def assert_saved_with_code(folder, module, config_class, model_class):
    """config.json maps the auto classes to `module`.py, which lies in `folder` with its relative import."""
    saved = json.loads((folder / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": f"{module}.{config_class.__name__}",
        "AutoModelForSemanticSegmentation": f"{module}.{model_class.__name__}",
    }
    assert (folder / f"{module}.py").is_file() and (folder / "remote_code.py").is_file()


def write_generated_dataset(out, count=8, size=32, seed=0, with_soft_labels=True, classes=("background", "oil")):
    """A folder laid out like `dakter generate` output (hf/ + data/*.parquet) with random soft labels."""
    import datasets
    from PIL import Image

    from dakter_hf.data.features import classes_present
    from dakter_hf.data.save import save_dataset
    from dakter_hf.generation.card import generated_features

    rng = np.random.default_rng(seed)
    soft = (rng.normal(size=(count, len(classes), size, size)) * 3).astype(np.float16)
    rows = {"image": [], "mask": [], "seed": [], "index": [], "classes": []}
    if with_soft_labels:
        rows["soft_label"] = list(soft)
    for i in range(count):
        mask = soft[i].astype(np.float32).argmax(0).astype(np.uint8)
        rows["image"].append(Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L"))
        rows["mask"].append(Image.fromarray(mask, mode="L"))
        rows["seed"].append(i)
        rows["index"].append(i)
        rows["classes"].append(classes_present(mask))
    features = generated_features(list(classes), size, size, with_soft_labels=with_soft_labels)
    save_dataset(datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)}), str(out))
    with open(f"{out}/.dakter.json", "w", encoding="utf-8") as handle:  # owned by `dakter generate`, as its output is
        handle.write('{"kind": "generate"}')
    return soft
