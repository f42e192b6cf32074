"""`dakter generate --soft-labels` and the independent label timestep of training (issue 19)."""

import json

import numpy as np
import torch
from helpers import run_generate, tiny_pipeline
from joint_helpers import make_args

from dakter_hf.data.sources import load_saved
from dakter_hf.joint.training import train
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline, has_label_timestep


torch.set_num_threads(1)


def soft_labels(folder):
    data = load_saved(str(folder), split="train")["train"].with_format("numpy")
    return np.stack(data["soft_label"]).astype(np.float32), np.stack(data["mask"])


def test_each_source_is_used_recorded_and_named_on_the_card(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "pipe")
    found = {}
    for source in ("final", "trajectory", "posterior"):
        out = tmp_path / source
        assert run_generate(str(tmp_path / "pipe"), out, "--soft-labels", source, "--trajectory-steps", "2") == 0
        record = json.loads((out / "generation_config.json").read_text())
        card = (out / "README.md").read_text()
        if source == "final":  # the paper's record is unchanged: folders made before the option resume
            assert "soft_label_source" not in record
        else:
            assert record["soft_label_source"] == source
        assert f"`{source}`" in card
        found[source] = soft_labels(out)
    # same seeds, other soft labels; each mask is its soft label's argmax
    assert not np.allclose(found["final"][0], found["trajectory"][0])
    assert not np.allclose(found["final"][0], found["posterior"][0])
    for logits, masks in found.values():
        assert (logits.argmax(axis=1) == masks).all()
    # a rerun with another source is another dataset: refused
    assert run_generate(str(tmp_path / "pipe"), tmp_path / "final", "--soft-labels", "trajectory") == 2


def test_posterior_timestep_beyond_the_schedule_is_refused(tmp_path, capsys):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "pipe")
    code = run_generate(
        str(tmp_path / "pipe"), tmp_path / "out", "--soft-labels", "posterior", "--posterior-timestep", "1000"
    )
    assert code == 2 and "--posterior-timestep" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_training_with_an_independent_label_timestep_builds_a_segmenter(tmp_path):
    folder = train(make_args(tmp_path / "run", independent_label_timestep=0.5))
    pipe = DAKTerPipeline.from_pretrained(folder)
    assert has_label_timestep(pipe.unet)
    logits = pipe.segment(torch.zeros(2, 1, 16, 16))
    assert logits.shape == (2, 2, 16, 16) and torch.isfinite(logits).all()
    paper = DAKTerPipeline.from_pretrained(train(make_args(tmp_path / "paper")))
    assert not has_label_timestep(paper.unet)


def test_bad_independent_label_timestep_is_refused(tmp_path):
    import pytest

    for value in (-0.1, 1.5):
        with pytest.raises(ValueError, match="--independent_label_timestep"):
            make_args(tmp_path / "x", independent_label_timestep=value)
