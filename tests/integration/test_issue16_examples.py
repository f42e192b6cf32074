"""The examples of issue 16 ("Why") that destroyed a user's files, took real data as generated, or gave a
traceback: each one as it was tried, refused now with one line and exit code 2, the user's files unchanged."""

import json

import numpy as np
import pytest
import yaml
from helpers import tree
from PIL import Image
from student_helpers import ID2LABEL, TINY_OVERRIDES, write_generated_dataset

from dakter_hf.cli import main
from dakter_hf.students.models import build_student, load_student, make_image_processor
from dakter_hf.students.train import main as student_main
from dakter_hf.utils.arguments import run_launcher


def student_exit(argv):
    try:
        return run_launcher(student_main, "train_student.py", argv)
    except SystemExit as stop:
        return stop.code


def one_line(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("real") / "data"
    assert main(["data", "--source", "simulate:4", "--size", "16", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("student") / "model"
    model = build_student("segformer-b0", ID2LABEL, seed=0, **TINY_OVERRIDES["segformer-b0"])
    model.config.dakter_resolution = 16
    model.save_pretrained(path)
    make_image_processor(model, 16).save_pretrained(path)
    (path / "test_metrics.json").write_text('{"miou": 0.5}')
    (path / ".dakter.json").write_text('{"kind": "train-student"}')
    return path


# ---- generate --real D --scale 0.5 --out D --overwrite deleted the real dataset D
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_generate_never_writes_into_its_real_data(pipeline_dir, real_dir, capsys, overwrite):
    before = tree(real_dir)
    for out in (real_dir, real_dir / "inside"):
        argv = ["generate", "--pipeline", pipeline_dir, "--real", str(real_dir), "--scale", "0.5", "--out", str(out)]
        assert main([*argv, "--steps", "2", "--device", "cpu", *overwrite]) == 2
        one_line(capsys, "--out", "overlaps the input")
    assert tree(real_dir) == before and not (real_dir / "inside").exists()


# ---- evaluate --json M/config.json overwrote the evaluated model's config (and weights, metrics, marker)
@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "test_metrics.json", ".dakter.json"])
def test_evaluate_never_writes_onto_the_model(student_dir, real_dir, capsys, name):
    before = tree(student_dir)
    argv = ["evaluate", "--model", str(student_dir), "--data", str(real_dir), "--split", "train"]
    assert main([*argv, "--json", str(student_dir / name)]) == 2
    one_line(capsys, "--json", "overlaps the input")
    assert tree(student_dir) == before
    load_student(str(student_dir))  # still loads


def test_evaluate_refuses_a_bad_json_path_before_it_evaluates(student_dir, real_dir, tmp_path, capsys, monkeypatch):
    import dakter_hf.students.inference as inference

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the evaluation ran before the output path was checked")

    monkeypatch.setattr(inference, "evaluate_student", no_evaluation)
    (tmp_path / "a-file").write_text("x")
    argv = ["evaluate", "--model", str(student_dir), "--data", str(real_dir), "--split", "train", "--json"]
    assert main([*argv, str(tmp_path / "a-file" / "metrics.json")]) == 2
    one_line(capsys, "--json", "is a file")
    (tmp_path / "folder").mkdir()
    assert main([*argv, str(tmp_path / "folder")]) == 2
    one_line(capsys, "--json", "is a folder")


# ---- segment scenes/ --out scenes/ overwrote the user's s1_mask.png and segmented its own output
def test_segment_never_writes_into_its_scenes(student_dir, tmp_path, capsys):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    Image.fromarray(np.full((20, 20), 60, np.uint8)).save(scenes / "s1.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(scenes / "s1_mask.png")  # the user's own mask
    before = tree(scenes)
    for out in (scenes, scenes / "masks", tmp_path):
        assert main(["segment", str(scenes), "--model", str(student_dir), "--out", str(out)]) == 2
        one_line(capsys, "--out", "overlaps the input")
    assert tree(scenes) == before
    # into its own folder it works; that folder, passed later as scenes, is recognised as outputs, not read
    out = tmp_path / "out"
    assert main(["segment", str(scenes / "s1.png"), "--model", str(student_dir), "--out", str(out)]) == 0
    written = tree(out)
    assert main(["segment", str(out), "--model", str(student_dir), "--out", str(tmp_path / "again")]) == 2
    assert "`dakter segment` output folder" in capsys.readouterr().err
    assert tree(out) == written and not (tmp_path / "again").exists()  # nothing segmented: no folder made


# ---- a `dakter data` folder as --generated: "use --mode hard", and --mode hard trained on it with exit 0
@pytest.mark.parametrize("mode", ["dakter", "hard"])
def test_real_data_passed_as_generated_is_named_for_what_it_is(real_dir, tmp_path, capsys, mode):
    out = tmp_path / "student"
    argv = ["--real", str(real_dir), "--generated", str(real_dir), "--mode", mode, "--output_dir", str(out)]
    assert student_exit([*argv, "--resolution", "16", "--max_steps", "1"]) == 2
    one_line(capsys, "--generated", "a `dakter data` folder (real data)")
    assert not out.exists()


def test_a_folder_that_no_command_wrote_is_not_generated(real_dir, tmp_path, capsys):
    plain = tmp_path / "copy"
    plain.mkdir()
    (plain / "data").mkdir()
    argv = ["--real", str(real_dir), "--generated", str(plain), "--mode", "hard", "--output_dir", str(tmp_path / "s")]
    assert student_exit(argv) == 2
    one_line(capsys, "--generated", "not written by `dakter generate`")


# ---- non-finite numbers: --scale inf gave an OverflowError
def test_non_finite_numbers_are_one_line(pipeline_dir, real_dir, student_dir, tmp_path, capsys):
    argv = ["generate", "--pipeline", pipeline_dir, "--real", str(real_dir), "--out", str(tmp_path / "g")]
    assert main([*argv, "--scale", "inf"]) == 2
    one_line(capsys, "--scale", "finite")
    assert not (tmp_path / "g").exists()
    assert main([*argv, "--scale", "1e308"]) == 2  # finite, but not its count of samples
    one_line(capsys, "--scale", "not a finite count")
    write_generated_dataset(tmp_path / "gen", count=4, size=16)
    capsys.readouterr()
    hard = ["--real", str(real_dir), "--generated", str(tmp_path / "gen"), "--mode", "hard", "--scale", "1e308"]
    assert student_exit([*hard, "--test_split", "none", "--output_dir", str(tmp_path / "s")]) == 2
    one_line(capsys, "--scale", "not a finite number")
    student = ["--real", str(real_dir), "--output_dir", str(tmp_path / "s"), "--mode", "real"]
    for flag in ("--scale", "--learning_rate", "--kd_weight", "--num_train_epochs"):
        for value in ("inf", "nan", "-inf"):
            assert student_exit([*student, f"{flag}={value}"]) == 2
            one_line(capsys, flag, "finite")
    config = tmp_path / "c.yaml"
    config.write_text("temperature: .nan\n")
    assert student_exit([*student, "--config", str(config)]) == 2
    one_line(capsys, "temperature", "finite")
    scene = tmp_path / "scene.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(scene)
    assert main(["segment", str(scene), "--model", str(student_dir), "--out", str(tmp_path / "o"), "--overlap", "nan"])
    one_line(capsys, "--overlap", "finite")
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "data": {"source": str(real_dir)},
                "students": [{"student": "segformer-b0", "resolution": 32}],
                "scales": [float("inf")],
                "output_dir": str(tmp_path / "run"),
            }
        )
    )
    assert main(["experiment", "--config", str(experiment)]) == 2
    one_line(capsys, "scales", "finite")
    assert not (tmp_path / "run").exists() and not (tmp_path / "s").exists()
    assert json.loads((student_dir / "test_metrics.json").read_text()) == {"miou": 0.5}


def test_student_config_values_are_one_line(real_dir, tmp_path, capsys):
    student = ["--real", str(real_dir), "--mode", "real", "--test_split", "none", "--output_dir", str(tmp_path / "s")]
    for config in ('{"depths": NaN}', '{"decoder_hidden_size": 1e999}', '{"hidden_sizes": -Infinity}'):
        assert student_exit([*student, "--student_config", config]) == 2
        one_line(capsys, "--student_config", "finite")
    assert student_exit([*student, "--student_config", '{"depths": 1.5}', "--resolution", "16"]) == 2
    one_line(capsys, "--student_config", "depths")
    assert student_exit([*student, "--teacher", str(real_dir)]) == 2  # real data is no teacher
    one_line(capsys, "--teacher", "not a student saved by train_student.py")
    assert not (tmp_path / "s").exists()


def test_a_broken_config_file_is_one_line(real_dir, tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text(": [\n")
    assert main(["experiment", "--config", str(broken)]) == 2
    one_line(capsys, "--config", "broken.yaml")
    assert student_exit(["--config", str(broken)]) == 2
    one_line(capsys, "--config", "broken.yaml")
