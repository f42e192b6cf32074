"""What a joint-training run does with its folder: a used one needs --resume or --overwrite; the card and
the pipeline config it writes name the final folder and the training data's normalisation."""

import json
import os

import numpy as np
import pytest
from helpers import tree
from PIL import Image

from dakter_hf.cli import main
from dakter_hf.errors import FolderError
from dakter_hf.joint.arguments import JointTrainingArguments
from dakter_hf.joint.training import train
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.utils.ownership import read_marker


def test_training_into_a_used_folder_needs_resume_or_overwrite(tmp_path, one_thread):
    common = {"data": "simulate:8", "resolution": 16, "unet_preset": "tiny", "train_batch_size": 4}
    common |= {"max_train_steps": 2, "checkpointing_steps": 1, "checkpoints_total_limit": 5, "report_to": "none"}
    common |= {"logging_steps": 1, "learning_rate": 1e-3}
    out = tmp_path / "run"
    train(JointTrainingArguments(output_dir=str(out), **common))
    before = tree(out)
    with pytest.raises(FolderError, match="--resume_from_checkpoint latest"):
        train(JointTrainingArguments(output_dir=str(out), **common))
    with pytest.raises(FolderError, match="other settings"):
        train(JointTrainingArguments(output_dir=str(out), resume_from_checkpoint="latest", **{**common, "seed": 1}))
    assert tree(out) == before
    # --overwrite starts a fresh run: the old checkpoints are gone, the new ones kept
    train(JointTrainingArguments(output_dir=str(out), overwrite=True, **{**common, "seed": 1, "max_train_steps": 1}))
    assert sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")) == ["checkpoint-1"]
    assert read_marker(str(out))["settings"]["seed"] == 1


def test_model_card_names_the_final_folder(tmp_path, one_thread):
    out = tmp_path / "run"
    final = train(
        JointTrainingArguments(
            output_dir=str(out),
            data="simulate:8",
            resolution=16,
            unet_preset="tiny",
            train_batch_size=4,
            max_train_steps=1,
            report_to="none",
        )
    )
    card = open(os.path.join(final, "README.md")).read()
    assert final in card and "pipeline.tmp" not in card


def test_the_pipeline_config_records_the_training_normalisation(tmp_path, one_thread):
    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(1, 60000, (16, 16)).astype(np.uint16)).save(root / "images" / f"{i}.png")
        Image.fromarray((rng.random((16, 16)) > 0.7).astype(np.uint8)).save(root / "masks" / f"{i}.png")
    folder = ["--source", f"folder:{root}", "--classes", "background,oil"]
    assert main(["data", *folder, "--intensity", "db", "--out", str(tmp_path / "ds")]) == 0
    final = train(
        JointTrainingArguments(
            output_dir=str(tmp_path / "run"),
            data=str(tmp_path / "ds"),
            resolution=16,
            unet_preset="tiny",
            train_batch_size=2,
            max_train_steps=1,
            report_to="none",
        )
    )
    recorded = json.loads(open(os.path.join(final, "model_index.json")).read())["input_normalization"]
    assert recorded["intensity"] == "db" and recorded["clip_percentiles"] is None
    assert DAKTerPipeline.from_pretrained(final).config.input_normalization["intensity"] == "db"
    with pytest.raises(ValueError, match="folder:ROOT"):
        from dakter_hf.data.options import normalization_from_args

        normalization_from_args(type("A", (), {"intensity": "db", "clip_percentiles": None})(), "sos:/data")
