"""Never lose or mix a user's data (issue 11): the guarantees that span several commands.

What one command alone guarantees lives with its tests: tests/utils/test_ownership.py (the lock),
tests/data/test_sar_inputs.py and test_export_reruns.py, tests/generation/test_inputs.py,
tests/joint/test_run_folder.py and test_argument_checks.py.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT, run_generate, tree
from PIL import Image

from dakter_hf.cli import main
from dakter_hf.errors import FolderError
from dakter_hf.utils.ownership import MARKER, read_marker


# ---- one command's output is another's input ----------------------------------------------


def test_generate_into_a_data_folder_is_refused(pipeline_dir, tmp_path, capsys):
    data = tmp_path / "real"
    assert main(["data", "--source", "simulate:4", "--size", "16", "--out", str(data)]) == 0
    before = tree(data)
    assert run_generate(pipeline_dir, data) == 2
    assert "written by `data`" in capsys.readouterr().err
    assert tree(data) == before


def test_overwrite_never_deletes_the_commands_own_input(pipeline_dir, tmp_path, capsys):
    before = tree(pipeline_dir)
    assert run_generate(pipeline_dir, pipeline_dir, "--overwrite") == 2
    assert "overlaps the input" in capsys.readouterr().err
    assert run_generate(pipeline_dir, os.path.join(pipeline_dir, "inside"), "--overwrite") == 2
    assert tree(pipeline_dir) == before and not os.path.exists(os.path.join(pipeline_dir, "inside"))
    source = tmp_path / "raw"
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(source / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(source / "masks" / "a.png")
    raw = tree(source)
    for out in (source, tmp_path):  # the source folder itself, and a folder holding it
        argv = [
            "data",
            "--source",
            f"folder:{source}",
            "--classes",
            "background,oil",
            "--out",
            str(out),
            "--overwrite",
        ]
        assert main(argv) == 2
    assert tree(source) == raw


# ---- every command twice into one folder --------------------------------------------------


def test_every_command_twice_with_other_settings_keeps_the_first_run(pipeline_dir, tmp_path, capsys, one_thread):
    runs = {
        "data": (["data", "--source", "simulate:4", "--size", "16"], ["--seed", "1"]),
        "generate": (
            ["generate", "--pipeline", pipeline_dir, "-n", "2", "--steps", "2", "--device", "cpu"],
            ["--seed", "5"],
        ),
        "demo": (["demo", "--steps", "2", "--samples", "2", "--inference-steps", "2"], ["--samples", "3"]),
    }
    for name, (first, second) in runs.items():
        out = tmp_path / name
        assert main(first + ["--out", str(out)]) == 0, name
        before = tree(out)
        assert main(first + second + ["--out", str(out)]) == 2, name
        assert tree(out) == before, name
        # the same settings again: continued or left as it is, never mixed
        assert main(first + ["--out", str(out)]) == 0, name
        assert read_marker(str(out))["settings_hash"] == json.loads(before[MARKER])["settings_hash"]
    # students: the same rule through train_student.py
    from dakter_hf.data.save import save_dataset
    from dakter_hf.data.simulate import simulate_sar
    from dakter_hf.students.train import main as train_student

    save_dataset(simulate_sar(4, size=32, seed=0, num_test_samples=2), str(tmp_path / "real"))
    tiny = json.dumps(
        {
            "hidden_sizes": [8, 8, 8, 8],
            "depths": [1, 1, 1, 1],
            "num_attention_heads": [1, 1, 1, 1],
            "sr_ratios": [1, 1, 1, 1],
            "decoder_hidden_size": 8,
        }
    )
    student = [
        "--real",
        str(tmp_path / "real"),
        "--mode",
        "real",
        "--student",
        "segformer-b0",
        "--student_config",
        tiny,
        "--resolution",
        "32",
        "--max_steps",
        "1",
        "--per_device_train_batch_size",
        "2",
        "--save_strategy",
        "no",
        "--output_dir",
        str(tmp_path / "student"),
    ]
    train_student(student)
    before = tree(tmp_path / "student")
    with pytest.raises(FolderError):
        train_student(student + ["--learning_rate", "0.5"])
    assert tree(tmp_path / "student") == before


# ---- both launchers, and leftovers of two commands -----------------------------------------


def test_launchers_answer_user_errors_in_one_line(tmp_path):
    root = str(REPO_ROOT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    for script, args in (
        ("train_joint.py", ["--data", str(tmp_path / "absent"), "--output_dir", str(tmp_path / "o")]),
        (
            "train_student.py",
            ["--real", str(tmp_path / "absent"), "--mode", "real", "--output_dir", str(tmp_path / "s")],
        ),
    ):
        result = subprocess.run(
            [sys.executable, os.path.join(root, "training", script), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "absent" in result.stderr.strip().splitlines()[-1]
        assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_leftover_staging_is_removed_on_the_next_run(pipeline_dir, tmp_path):
    out = tmp_path / "gen"
    assert run_generate(pipeline_dir, out) == 0
    (out / "data" / "train-00000-of-00001.parquet.tmp").write_bytes(b"half")
    (out / "data" / ".train-00000-of-00001.parquet.0123456789ab.tmp").write_bytes(b"half")  # atomic_path's name
    (out / "hf.tmp-abc").mkdir()
    assert run_generate(pipeline_dir, out) == 0
    assert not (out / "data" / "train-00000-of-00001.parquet.tmp").exists() and not (out / "hf.tmp-abc").exists()
    assert not list((out / "data").glob("*.tmp"))
    data = tmp_path / "ds"
    (tmp_path / "ds.tmp-old").mkdir()
    assert main(["data", "--source", "simulate:2", "--size", "16", "--out", str(data)]) == 0
    assert not (tmp_path / "ds.tmp-old").exists()
