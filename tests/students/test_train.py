"""train_student.py end to end on tiny data: every mode, the teacher baseline, saved artefacts, refusals."""

import json
import os
import subprocess

import pytest
import torch
from student_helpers import TINY_OVERRIDES, launch_student_command

from dakter_hf.data.save import save_dataset
from dakter_hf.data.simulate import simulate_sar
from dakter_hf.generation.config import GenerationSettings
from dakter_hf.generation.dataset import generate_dataset
from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.joint.unet import make_joint_unet
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.students.models import build_student, load_student
from dakter_hf.students.train import main, parse_student_args


TINY = json.dumps(TINY_OVERRIDES["segformer-b0"])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Real (synthetic) scenes with train/test at 32 px, and 8 samples from a tiny DAKTer pipeline (16 px)."""
    root = tmp_path_factory.mktemp("student_data")
    save_dataset(simulate_sar(8, num_classes=2, size=32, seed=0, num_test_samples=4), str(root / "real"))
    torch.manual_seed(0)
    pipe = DAKTerPipeline(
        unet=make_joint_unet(2, "tiny", sample_size=16),
        scheduler=DAKTerObjective(2, 0.4).sampling_scheduler(),
        balancing_factor=0.4,
        class_names=["background", "oil"],
    )
    pipe.save_pretrained(str(root / "pipeline"))
    settings = GenerationSettings(num_samples=8, batch_size=4, num_inference_steps=2)
    generate_dataset(str(root / "pipeline"), str(root / "generated"), settings, device="cpu", show_progress=False)
    return {"real": str(root / "real"), "generated": str(root / "generated")}


def run(out, *extra):
    argv = [
        "--student",
        "segformer-b0",
        "--student_config",
        TINY,
        "--resolution",
        "32",
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
        *extra,
    ]
    if "--student_config" in extra:  # a later value wins; drop the default pair
        argv = argv[:2] + argv[4:]
    return main(argv)


@pytest.mark.parametrize("mode", ["real", "hard", "dakter"])
def test_each_mode_saves_student_processor_metrics_and_card(data, tmp_path, mode, one_thread):
    extra = ["--real", data["real"], "--mode", mode]
    if mode != "real":
        extra += ["--generated", data["generated"], "--scale", "0.5"]
    out = run(tmp_path / mode, *extra)
    model, processor = load_student(out)
    assert model.config.num_labels == 2 and processor.size == {"height": 32, "width": 32}
    assert model.config.sar_input["normalization"]["intensity"] == "linear"  # recorded for `dakter segment`
    metrics = json.loads(open(os.path.join(out, "test_metrics.json")).read())
    assert set(metrics) >= {
        "mean_iou",
        "mean_f1",
        "per_category_iou",
        "per_category_precision",
        "per_category_recall",
        "overall_accuracy",
    }
    assert metrics["num_images"] == 4
    card = open(os.path.join(out, "README.md")).read()
    assert f"mode: {mode}" in card and data["real"] in card and "| mIoU |" in card
    if mode != "real":
        assert data["generated"] in card and "num_generated_images: 4" in card


def test_teacher_baseline_caches_teacher_soft_labels(data, tmp_path, one_thread):
    teacher = run(tmp_path / "teacher", "--real", data["real"], "--mode", "real")
    out = run(tmp_path / "student", "--real", data["real"], "--mode", "real", "--teacher", teacher)
    cache = os.path.join(out, "teacher_soft_labels")
    assert os.path.isfile(os.path.join(cache, "teacher.json"))
    import datasets

    cached = datasets.load_from_disk(os.path.join(cache, "hf"))
    assert len(cached) == 8 and cached.features["soft_label"].shape == (2, 32, 32)
    assert "teacher" in open(os.path.join(out, "README.md")).read()


def test_output_dir_with_other_settings_is_refused(data, tmp_path, one_thread):
    run(tmp_path / "a", "--real", data["real"], "--mode", "real")
    with pytest.raises(ValueError, match="other settings"):
        run(tmp_path / "a", "--real", data["real"], "--mode", "real", "--learning_rate", "0.5")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not written by `train-student`"):
        run(tmp_path / "foreign", "--real", data["real"], "--mode", "real")
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "argv, word",
    [
        (["--mode", "dakter"], "--generated"),
        (["--mode", "real", "--generated", "x"], "--mode real"),
        (["--mode", "fancy"], "--mode"),
        (["--mode", "real", "--student", "unet"], "--student"),
        (["--mode", "hard", "--generated", "g", "--scale", "0"], "--scale"),
        (["--mode", "real", "--resolution", "30"], "--resolution"),
        (["--mode", "real", "--student_config", "[1]"], "--student_config"),
        (["--mode", "real", "--temperature", "0"], "temperature"),
    ],
)
def test_bad_arguments_name_the_flag(argv, word):
    with pytest.raises(ValueError, match=word):
        parse_student_args(argv + ["--output_dir", "unused"])


def test_paper_defaults_and_repeatable_generated():
    args, training = parse_student_args(
        ["--mode", "dakter", "--generated", "a", "--generated", "b", "--output_dir", "x"]
    )
    assert args.generated == ["a", "b"] and args.student == "segformer-b3" and args.scale == 1.0
    assert (
        training.learning_rate == 1e-4
        and training.per_device_train_batch_size == 32
        and training.num_train_epochs == 400
    )
    assert training.remove_unused_columns is False and training.batch_eval_metrics is True
    loss = args.loss_config()
    assert (loss.temperature, loss.ce_weight, loss.kd_weight, loss.dice_weight) == (2.0, 1.0, 0.1, 0.5)
    hard, _ = parse_student_args(["--mode", "hard", "--generated", "a", "--output_dir", "x"])
    assert hard.loss_config().kd_weight == 0.0 and hard.loss_config().generated_dice_target == "hard"


def test_config_file_with_both_argument_groups(tmp_path):
    path = tmp_path / "student.yaml"
    path.write_text(
        "mode: real\nstudent: segformer-b0\nlearning_rate: 3e-4\nnum_train_epochs: 2\noutput_dir: somewhere\n"
    )
    args, training = parse_student_args(["--config", str(path), "--num_train_epochs", "5"])
    assert args.student == "segformer-b0" and training.learning_rate == 3e-4 and training.num_train_epochs == 5


def test_accelerate_launch_runs_the_launcher(data, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [
        *launch_student_command(data["real"]),
        *f"--output_dir {tmp_path / 'launched'} --max_steps 1 --per_device_train_batch_size 4".split(),
        *"--save_strategy no --disable_tqdm true".split(),
    ]
    subprocess.run(command, check=True, env=env, cwd=str(tmp_path), capture_output=True)
    assert (tmp_path / "launched" / "model.safetensors").is_file()


def test_a_rejected_argument_leaves_no_marker(data, tmp_path):
    with pytest.raises(FileNotFoundError, match="--student_weights"):
        run(
            tmp_path / "out",
            "--real",
            data["real"],
            "--mode",
            "real",
            "--student_config",
            "null",
            "--student_weights",
            str(tmp_path / "absent"),
        )
    with pytest.raises(Exception, match="--scale"):
        run(
            tmp_path / "out",
            "--real",
            data["real"],
            "--mode",
            "hard",
            "--generated",
            data["generated"],
            "--scale",
            "2.0",
        )
    assert not (tmp_path / "out").exists()
    run(tmp_path / "out", "--real", data["real"], "--mode", "real")  # the corrected command runs


def test_rerunning_a_finished_run_changes_nothing(data, tmp_path, one_thread):
    out = run(tmp_path / "done", "--real", data["real"], "--mode", "real")
    before = {
        name: os.path.getmtime(os.path.join(out, name))
        for name in ("model.safetensors", "test_metrics.json", "README.md")
    }
    run(tmp_path / "done", "--real", data["real"], "--mode", "real")
    assert before == {name: os.path.getmtime(os.path.join(out, name)) for name in before}


def test_resume_restores_the_checkpoint_weights(data, tmp_path, one_thread):
    """Resuming from checkpoint-2 of a 4-step run ends with the same weights as the uninterrupted run.

    No dropout and no augmentation, so the run is a function of the data order alone.
    """
    quiet = json.dumps({**TINY_OVERRIDES["segformer-b0"], "classifier_dropout_prob": 0.0, "drop_path_rate": 0.0})
    common = [
        "--real",
        data["real"],
        "--mode",
        "dakter",
        "--generated",
        data["generated"],
        "--scale",
        "0.5",
        "--max_steps",
        "4",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--seed",
        "3",
        "--data_seed",
        "3",
        "--augment",
        "false",
        "--student_config",
        quiet,
    ]
    whole = run(tmp_path / "whole", *common)
    first = tmp_path / "part"
    run(first, *common)
    # simulate an interruption after step 2: keep only checkpoint-2, forget the finished state
    import shutil

    shutil.rmtree(first / "checkpoint-4")
    for name in ("model.safetensors", "test_metrics.json", "README.md"):
        (first / name).unlink()
    marker = json.loads((first / ".dakter.json").read_text())
    (first / ".dakter.json").write_text(json.dumps({**marker, "finished": False}))
    run(first, *common, "--resume_from_checkpoint", "latest")
    a, _ = load_student(whole)
    b, _ = load_student(str(first))
    fresh = build_student("segformer-b0", {0: "background", 1: "oil"}, seed=3, **json.loads(quiet)).state_dict()
    moved = 0
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name
        moved += int(not torch.allclose(x, fresh[name]))
    assert moved > 0


def test_temperature_is_fitted_on_the_held_out_part_of_train_and_the_test_ece_reported_after(
    data, tmp_path, one_thread
):
    held_out = ["--validation_fraction", "0.25", "--eval_strategy", "epoch"]
    out = run(tmp_path / "scaled", "--real", data["real"], "--mode", "real", *held_out)
    metrics = json.loads(open(os.path.join(out, "test_metrics.json")).read())
    scaled = metrics["temperature_scaling"]
    assert scaled["temperature"] > 0 and scaled["fitted_on"].startswith("2 held-out training images")
    assert {"ece", "brier", "nll", "per_category_ece"} <= set(scaled) and "ece" in metrics
    plain = run(tmp_path / "plain", "--real", data["real"], "--mode", "real")
    assert "temperature_scaling" not in json.loads(open(os.path.join(plain, "test_metrics.json")).read())
