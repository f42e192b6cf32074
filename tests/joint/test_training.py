"""Joint training (dakter_hf.joint.training): outputs, exact resume, limits, stage 2, options, configs, errors.

Everything runs on `simulate:16` scenes at 16 px with the `tiny` UNet for a few steps,
so each run takes seconds on a CPU.
"""

import glob
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import REPO_ROOT, accelerate_launch
from joint_helpers import BASE, make_args
from safetensors.torch import load_file

from dakter_hf.data.balance import compute_balance_stats
from dakter_hf.data.sources import load_source
from dakter_hf.joint.arguments import JointTrainingArguments, parse_args
from dakter_hf.joint.training import train
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline


# A tiny UNet is far faster on one thread than on two oversubscribed ones.
torch.set_num_threads(1)


def unet_weights(pipeline_dir):
    return load_file(os.path.join(pipeline_dir, "unet", "diffusion_pytorch_model.safetensors"))


def checkpoint_weights(checkpoint_dir):
    return load_file(os.path.join(checkpoint_dir, "model.safetensors"))


def assert_same_weights(a, b, atol=1e-6):
    assert set(a) == set(b)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=0), (
            f"{name} differs (max |diff| {(a[name] - b[name]).abs().max():.3g})"
        )


def read_front_matter(path):
    text = Path(path).read_text(encoding="utf-8")
    assert text.startswith("---\n"), "model card must start with YAML front matter"
    front, _, body = text[4:].partition("\n---\n")
    return yaml.safe_load(front), body


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """One tiny stage-1 run shared by the output, two-stage and class-mismatch tests."""
    out = tmp_path_factory.mktemp("stage1")
    final = train(make_args(out, max_train_steps=3))
    return out, final


# ------------------------------------------------------------------------ outputs
def test_run_writes_pipeline_card_and_history(stage1):
    out, final = stage1
    assert final == os.path.join(str(out), "pipeline")
    pipe = DAKTerPipeline.from_pretrained(final)

    train_split = load_source("simulate:16", num_classes=2, size=16, seed=0)["train"]
    expected_b = compute_balance_stats(train_split, resolution=16).b
    assert pipe.config.balancing_factor == pytest.approx(expected_b, rel=1e-9)
    assert pipe.config.balance_resolution == 16
    assert list(pipe.config.class_names) == ["background", "oil"]
    assert pipe.unet.config.sample_size == 16

    meta, body = read_front_matter(os.path.join(final, "README.md"))
    assert meta["library_name"] == "diffusers"
    assert "dakter" in meta["tags"]
    assert meta["dakter"]["class_names"] == ["background", "oil"]
    assert meta["dakter"]["balancing_factor"] == pytest.approx(expected_b, abs=1e-6)
    assert "16x16" in body

    history = [json.loads(line) for line in Path(out, "loss_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3]
    assert all(np.isfinite(h["loss"]) for h in history)
    assert os.path.isfile(os.path.join(out, "training_args.json"))
    assert not list(Path(out).glob("*.tmp"))  # pathlib also sees hidden names (.NAME.<random>.tmp)

    images = pipe(
        batch_size=2,
        num_inference_steps=2,
        generator=[torch.Generator().manual_seed(i) for i in range(2)],
        output_type="np",
    )
    assert images.images.shape == (2, 16, 16, 1)
    assert images.soft_labels.shape == (2, 2, 16, 16)


# ------------------------------------------------------------------------- resume
@pytest.mark.parametrize("use_ema", [False, True], ids=["plain", "ema"])
def test_resume_matches_uninterrupted_run(tmp_path, use_ema):
    common = {"checkpointing_steps": 3, "use_ema": use_ema, "ema_decay": 0.9, "seed": 3}
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    torch.rand(5)  # unrelated use of the global RNG between runs must not matter
    final_a = train(make_args(a_dir, max_train_steps=6, **common))

    train(make_args(b_dir, max_train_steps=3, **common))
    assert os.path.isdir(b_dir / "checkpoint-3")
    final_b = train(make_args(b_dir, max_train_steps=6, resume_from_checkpoint="latest", **common))

    # raw weights in the last checkpoint
    assert_same_weights(checkpoint_weights(a_dir / "checkpoint-6"), checkpoint_weights(b_dir / "checkpoint-6"))
    # saved pipelines (the EMA weights when use_ema)
    saved_a, saved_b = unet_weights(final_a), unet_weights(final_b)
    assert_same_weights(saved_a, saved_b)
    raw_a = checkpoint_weights(a_dir / "checkpoint-6")
    differs = any(not torch.equal(saved_a[k], raw_a[k]) for k in saved_a)
    assert differs == use_ema, "the saved pipeline must hold the EMA weights exactly when use_ema is set"

    steps_b = [json.loads(line)["step"] for line in (b_dir / "loss_history.jsonl").read_text().splitlines()]
    assert steps_b == [1, 2, 3, 4, 5, 6]


def test_same_seed_gives_same_initial_weights(tmp_path):
    final_a = train(make_args(tmp_path / "a", max_train_steps=1, seed=5))
    torch.rand(3)  # any unrelated use of the global RNG
    final_b = train(make_args(tmp_path / "b", max_train_steps=1, seed=5))
    assert_same_weights(unet_weights(final_a), unet_weights(final_b))


def test_resume_latest_without_checkpoint_starts_fresh(tmp_path):
    final = train(make_args(tmp_path / "fresh", max_train_steps=1, resume_from_checkpoint="latest"))
    assert os.path.isfile(os.path.join(final, "model_index.json"))


def test_resume_from_missing_checkpoint_dir_raises(tmp_path):
    missing = str(tmp_path / "nope" / "checkpoint-9")
    with pytest.raises(FileNotFoundError, match="checkpoint-9"):
        train(make_args(tmp_path / "run", max_train_steps=1, resume_from_checkpoint=missing))


def test_checkpoints_total_limit(tmp_path):
    out = tmp_path / "limited"
    train(make_args(out, max_train_steps=5, checkpointing_steps=1, checkpoints_total_limit=2))
    names = sorted(os.path.basename(p) for p in glob.glob(str(out / "checkpoint-*")))
    assert names == ["checkpoint-4", "checkpoint-5"]
    assert not list(Path(out).rglob("*.tmp"))  # hidden temporaries too, at any depth


# ---------------------------------------------------------------------- two-stage
def test_two_stage_training(stage1, tmp_path):
    _, stage1_pipeline = stage1
    final = train(make_args(tmp_path / "stage2", resolution=32, init_from=stage1_pipeline, max_train_steps=2))
    first, second = DAKTerPipeline.from_pretrained(stage1_pipeline), DAKTerPipeline.from_pretrained(final)
    assert first.unet.config.sample_size == 16, "stage 2 must not rewrite the stage-1 folder"
    assert second.unet.config.sample_size == 32
    assert second.config.balancing_factor == first.config.balancing_factor
    assert list(second.config.class_names) == list(first.config.class_names)

    w1, w2 = unet_weights(stage1_pipeline), unet_weights(final)
    assert set(w1) == set(w2)
    assert any(not torch.equal(w1[k], w2[k]) for k in w1), "stage 2 did not change the weights"

    out = second(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (1, 32, 32, 1)
    assert out.soft_labels.shape == (1, 2, 32, 32)
    assert out.masks.shape == (1, 32, 32)
    meta, _ = read_front_matter(os.path.join(final, "README.md"))
    assert meta["dakter"]["resolution"] == 32


def test_stage2_explicit_balancing_factor_overrides_inherit(stage1, tmp_path):
    _, stage1_pipeline = stage1
    final = train(
        make_args(
            tmp_path / "s2b", resolution=32, init_from=stage1_pipeline, max_train_steps=1, balancing_factor="0.25"
        )
    )
    assert DAKTerPipeline.from_pretrained(final).config.balancing_factor == 0.25


# ------------------------------------------------------------------------ options
def test_v_prediction_zero_terminal_snr_flow_into_pipeline(tmp_path):
    final = train(make_args(tmp_path / "v", image_prediction="v", zero_terminal_snr=True, max_train_steps=1))
    pipe = DAKTerPipeline.from_pretrained(final)
    assert pipe.config.image_prediction_type == "v_prediction"
    assert pipe.scheduler.config.rescale_betas_zero_snr is True
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    assert pipe.scheduler.config.prediction_type == "sample"
    out = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.isfinite(out.images).all() and np.isfinite(out.soft_labels).all()


def test_l2_binary_labels_five_classes(tmp_path):
    final = train(
        make_args(tmp_path / "l2", num_classes=5, label_loss="l2", label_encoding="binary", max_train_steps=1)
    )
    pipe = DAKTerPipeline.from_pretrained(final)
    assert pipe.unet.config.in_channels == 1 + 3
    assert pipe.unet.config.out_channels == 1 + 3
    assert pipe.config.label_loss == "l2" and pipe.config.label_encoding == "binary"
    assert len(pipe.config.class_names) == 5
    out = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.soft_labels is None
    assert out.masks.min() >= 0 and out.masks.max() < 5


# ------------------------------------------------------------------- config files
CONFIG = {
    "data": "simulate:16",
    "resolution": 16,
    "unet_preset": "tiny",
    "max_train_steps": 5,
    "use_ema": True,
    "learning_rate": 0.001,
    "report_to": "none",
}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_file_and_command_line_override(tmp_path, suffix):
    path = tmp_path / f"config{suffix}"
    path.write_text(yaml.safe_dump(CONFIG) if suffix == ".yaml" else json.dumps(CONFIG))
    args = parse_args(["--config", str(path), "--max_train_steps", "2"])
    assert args.max_train_steps == 2  # command line wins
    assert args.data == "simulate:16" and args.resolution == 16 and args.unet_preset == "tiny"
    assert args.use_ema is True and args.learning_rate == pytest.approx(1e-3)
    assert args.train_batch_size == JointTrainingArguments.train_batch_size  # untouched default

    args = parse_args(["--config", str(path), "--use_ema", "false", "--resolution", "32"])
    assert args.use_ema is False and args.max_train_steps == 5 and args.resolution == 32


def test_balancing_factor_none_on_command_line():
    args = parse_args(["--balancing_factor", "none"])
    assert args.balancing_factor == "none"


def test_balancing_factor_none_in_config_file(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("balancing_factor: none\n")
    assert parse_args(["--config", str(path)]).balancing_factor == "none"


def test_none_turns_off_clipping_and_checkpoint_limit_on_command_line(tmp_path):
    args = parse_args(["--max_grad_norm", "none", "--checkpoints_total_limit", "none"])
    assert args.max_grad_norm is None and args.checkpoints_total_limit is None
    path = tmp_path / "c.yaml"
    path.write_text("max_grad_norm: 0.5\ncheckpoints_total_limit: 4\n")
    args = parse_args(["--config", str(path), "--max_grad_norm", "null"])
    assert args.max_grad_norm is None and args.checkpoints_total_limit == 4


def test_command_line_types():
    args = parse_args(
        [
            "--resolution",
            "32",
            "--learning_rate",
            "1e-4",
            "--snr_gamma",
            "5",
            "--checkpoints_total_limit",
            "2",
            "--image_prediction",
            "v",
            "--use_ema",
            "yes",
        ]
    )
    assert args.resolution == 32 and isinstance(args.resolution, int)
    assert args.learning_rate == pytest.approx(1e-4) and isinstance(args.learning_rate, float)
    assert args.snr_gamma == 5.0 and args.checkpoints_total_limit == 2 and args.use_ema is True
    assert args.image_prediction == "v_prediction"
    with pytest.raises(SystemExit):
        parse_args(["--use_ema", "maybe"])


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("learning_rate: 1e-4\nmax_train_steps: 2\n")
    args = parse_args(["--config", str(path)])
    assert isinstance(args.learning_rate, float) and args.learning_rate == pytest.approx(1e-4)


def test_config_value_of_wrong_type_raises(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("resolution: sixteen\n")
    with pytest.raises(ValueError, match="resolution"):
        parse_args(["--config", str(path)])


def test_config_unknown_key_raises(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("resolution: 16\nlearning_rat: 0.001\n")
    with pytest.raises(ValueError, match="learning_rat"):
        parse_args(["--config", str(path)])


def test_config_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        parse_args(["--config", str(tmp_path / "absent.yaml")])


def test_repo_tiny_config_parses():
    path = REPO_ROOT / "dakter_hf" / "configs" / "tiny.yaml"
    args = parse_args(["--config", str(path)])
    assert args.unet_preset == "tiny"
    assert args.max_train_steps > 0


# ----------------------------------------------------------------------- bad args
def test_missing_dataset_path_names_the_path(tmp_path):
    with pytest.raises(ValueError, match="/nonexistent/dir"):
        train(make_args(tmp_path / "x", data="/nonexistent/dir"))
    assert not os.path.exists(tmp_path / "x" / "pipeline")


def test_init_from_with_other_classes_raises(stage1, tmp_path):
    _, stage1_pipeline = stage1
    with pytest.raises(ValueError, match="classes"):
        train(make_args(tmp_path / "x", num_classes=5, init_from=stage1_pipeline))


@pytest.mark.parametrize("steps", [0, -3])
def test_max_train_steps_must_be_positive(tmp_path, steps):
    with pytest.raises(ValueError, match="max_train_steps"):
        make_args(tmp_path, max_train_steps=steps)
    with pytest.raises(ValueError, match="max_train_steps"):
        parse_args(["--max_train_steps", str(steps)])


@pytest.mark.parametrize("value", ["-1", "0", "abc"])
def test_bad_balancing_factor_raises(tmp_path, value):
    with pytest.raises(ValueError, match="balancing_factor"):
        train(make_args(tmp_path / "x", balancing_factor=value))
    assert not os.path.exists(tmp_path / "x" / "pipeline")


def test_inherit_without_init_from_raises(tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        train(make_args(tmp_path / "x", balancing_factor="inherit"))


@pytest.mark.parametrize(
    "overrides, word",
    [
        ({"resolution": 0}, "resolution"),
        ({"unet_preset": "huge"}, "unet_preset"),
        ({"train_batch_size": 0}, "train_batch_size"),
        ({"image_prediction": "x1"}, "prediction"),
    ],
)
def test_bad_arguments_rejected_at_construction(tmp_path, overrides, word):
    with pytest.raises(ValueError, match=word):
        make_args(tmp_path, **overrides)


def test_batch_larger_than_dataset_raises(tmp_path):
    with pytest.raises(ValueError, match="global batch"):
        train(make_args(tmp_path / "x", data="simulate:2"))


# ------------------------------------------------------------------ accelerate launch
def test_accelerate_launch(tmp_path):
    out = tmp_path / "launched"
    config = {
        **BASE,
        "output_dir": str(out),
        "max_train_steps": 2,
        "checkpointing_steps": 1,
        "checkpoints_total_limit": 1,
    }
    path = tmp_path / "launch.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf_home")}
    command = accelerate_launch("--cpu", "training/train_joint.py", "--config", str(path))
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"accelerate launch exited {result.returncode}\nstderr:\n{result.stderr[-4000:]}"
    assert os.path.isfile(out / "pipeline" / "model_index.json")
    assert os.path.isfile(out / "pipeline" / "README.md")
    assert sorted(os.path.basename(p) for p in glob.glob(str(out / "checkpoint-*"))) == ["checkpoint-2"]
    assert DAKTerPipeline.from_pretrained(str(out / "pipeline")).unet.config.sample_size == 16


def test_resolution_must_suit_the_unet(tmp_path):
    # the `small` preset halves the resolution 3 times: 20 px cannot go through it
    with pytest.raises(ValueError, match="multiple of 8"):
        train(make_args(tmp_path / "r", unet_preset="small", resolution=20))


def test_stage_two_must_match_stage_one_objective(stage1, tmp_path):
    # stage 1 ran with the defaults (v on a zero-terminal-SNR schedule); the paper's x0 does not continue it
    with pytest.raises(ValueError, match="image_prediction"):
        train(make_args(tmp_path / "s2", init_from=stage1[1], image_prediction="sample", zero_terminal_snr=False))


def test_bare_boolean_flag_means_true():
    assert parse_args(["--use_ema"]).use_ema is True
    assert parse_args(["--use_ema", "false"]).use_ema is False


def test_push_to_hub_uploads_the_final_pipeline(tmp_path, monkeypatch):
    """The upload call path, against a local stand-in for huggingface_hub.HfApi."""
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            assert os.path.isfile(os.path.join(kwargs["folder_path"], "model_index.json"))
            assert os.path.isfile(os.path.join(kwargs["folder_path"], "README.md"))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    final = train(make_args(tmp_path / "p", max_train_steps=1, push_to_hub=True, hub_model_id="someone/dakter-tiny"))
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    assert calls[0][1]["repo_id"] == "someone/dakter-tiny" and calls[0][1]["repo_type"] == "model"
    assert calls[1][1]["folder_path"] == final
