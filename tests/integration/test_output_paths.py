"""The one output rule (`ownership.check_output_path`), as a table: every command that writes x every way an
output path can hit an input (the same path, inside it, holding it, a symlink to it) or another command's folder
-> refused with exit code 2 and one line naming the flag, before any work, with every input unchanged.

Refusals come before any data loads or model builds, so the inputs can be tiny (a student folder is only a
config file here) and the whole table runs in seconds.
"""

import json
import os
import runpy

import numpy as np
import pytest
import yaml
from helpers import REPO_ROOT, tree
from PIL import Image
from student_helpers import write_generated_dataset

from dakter_hf.cli import main
from dakter_hf.students.train import main as student_main
from dakter_hf.utils.arguments import run_launcher


def _joint_main(argv):
    script = runpy.run_path(str(REPO_ROOT / "training" / "train_joint.py"))
    return run_launcher(script["main"], "train_joint.py", argv)


def _student(argv):
    return run_launcher(student_main, "train_student.py", argv)


def _exit_code(call, argv):
    try:
        return call(argv)
    except SystemExit as stop:
        return stop.code


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """One of each input a command reads, each in its own box (so that "the folder holding it" holds nothing else)."""
    base = tmp_path_factory.mktemp("inputs")
    boxes = {name: base / name for name in ("real", "raw", "generated", "model", "scenes", "config")}
    for box in boxes.values():
        box.mkdir()
    real = boxes["real"] / "data"
    assert main(["data", "--source", "simulate:4", "--size", "16", "--out", str(real)]) == 0
    raw = boxes["raw"] / "source"
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(raw / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(raw / "masks" / "a.png")
    generated = boxes["generated"] / "gen"
    write_generated_dataset(generated, count=4, size=16)
    model = boxes["model"] / "student"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "segformer", "num_labels": 2}))
    (model / "model.safetensors").write_bytes(b"weights")
    scenes = boxes["scenes"] / "scenes"
    scenes.mkdir()
    Image.fromarray(np.full((8, 8), 50, np.uint8)).save(scenes / "s1.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(scenes / "s1_mask.png")  # the user's own mask
    config = boxes["config"] / "exp"
    config.mkdir()
    (config / "exp.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "data": {"source": str(real)},
                "students": [{"student": "segformer-b0", "resolution": 32}],
                "arms": ["real"],
                "output_dir": str(base / "never-used"),
            }
        )
    )
    inputs = {"real": real, "raw": raw, "generated": generated, "model": model, "scenes": scenes}
    return {**inputs, "config": config / "exp.yaml"}  # a file input: the experiment file


# command: (call, argv builder(out, inputs), the inputs it reads (keys), the input the table aims at, the flag named,
#           whether the output is a file, whether it takes --overwrite)
COMMANDS = {
    "data": (
        main,
        lambda out, i: ["data", "--source", f"folder:{i['raw']}", "--classes", "background,oil", "--out", out],
        ["raw"],
        "--out",
        False,
        True,
    ),
    "generate --real --scale": (
        main,
        lambda out, i: (
            ["generate", "--pipeline", str(i["model"]), "--real", str(i["real"]), "--scale", "0.5"]
            + ["--out", out, "--steps", "2", "--device", "cpu"]
        ),
        ["real", "model"],
        "--out",
        False,
        True,
    ),
    "quality --json": (
        main,
        lambda out, i: ["quality", "--real", str(i["real"]), "--generated", str(i["generated"]), "--json", out],
        ["generated", "real"],
        "--json",
        True,
        False,
    ),
    "evaluate --json": (
        main,
        lambda out, i: ["evaluate", "--model", str(i["model"]), "--data", str(i["real"]), "--json", out],
        ["model", "real"],
        "--json",
        True,
        False,
    ),
    "segment --out": (
        main,
        lambda out, i: ["segment", str(i["scenes"]), "--model", str(i["model"]), "--out", out],
        ["scenes", "model"],
        "--out",
        False,
        False,
    ),
    "train_joint.py": (
        _joint_main,
        lambda out, i: ["--data", str(i["real"]), "--resolution", "16", "--output_dir", out],
        ["real"],
        "--output_dir",
        False,
        True,
    ),
    "train_student.py": (
        _student,
        lambda out, i: (
            ["--real", str(i["real"]), "--generated", str(i["generated"]), "--mode", "hard"]
            + ["--teacher", str(i["model"]), "--output_dir", out]
        ),
        ["generated", "real", "model"],
        "--output_dir",
        False,
        True,
    ),
    "train_student.py --student_weights": (
        _student,
        lambda out, i: (
            ["--real", str(i["real"]), "--mode", "real", "--student_weights", str(i["model"])] + ["--output_dir", out]
        ),
        ["real", "model"],
        "--output_dir",
        False,
        True,
    ),
    "experiment --out": (
        main,
        lambda out, i: ["experiment", "--config", str(i["config"]), "--out", out],
        ["config", "real"],
        "output_dir",
        False,
        True,
    ),
    "experiment --report-dir": (
        main,
        lambda out, i: ["experiment", "--config", str(i["config"]), "--report-dir", out],
        ["config", "real"],
        "report_dir",
        False,
        False,
    ),
}
CASES = ("same", "inside", "parent", "symlink")


def _target(case, source, tmp_path, is_file):
    """The output path of `case` against the input `source` (a folder, or a file such as the experiment file).

    A file output (--json) aims at a file of the input where it has one (the model's config.json)."""
    aim = source / "config.json" if is_file and (source / "config.json").is_file() else source
    if case == "same":
        return str(aim)
    if case == "inside":
        return str(source / "new" / "out.json") if is_file else str(source / "new")
    if case == "parent":
        return str(source.parent)
    link = tmp_path / "link"
    os.symlink(aim, link)
    return str(link)


def snapshot(path):
    """Every byte of an input: a folder's files, or one file."""
    return tree(path) if os.path.isdir(path) else path.read_bytes()


def _assert_refused(capsys, code, flag, before, inputs, keys):
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and flag in err, err
    assert "Traceback" not in err
    assert {key: snapshot(inputs[key]) for key in keys} == before


# each command x case, plain and (for the commands that have the flag) with --overwrite
TABLE = [
    pytest.param(command, case, overwrite, id=f"{command}-{case}-{'overwrite' if overwrite else 'plain'}")
    for command, spec in COMMANDS.items()
    for case in CASES
    for overwrite in ((False, True) if spec[5] else (False,))
]


@pytest.mark.parametrize("command, case, overwrite", TABLE)
def test_an_output_on_an_input_is_refused(command, case, overwrite, inputs, tmp_path, capsys):
    call, argv, keys, flag, is_file, _ = COMMANDS[command]
    for key in keys:  # each input the command reads, in turn
        before = {k: snapshot(inputs[k]) for k in keys}
        (tmp_path / key).mkdir()
        out = _target(case, inputs[key], tmp_path / key, is_file)
        code = _exit_code(call, argv(out, inputs) + (["--overwrite"] if overwrite else []))
        _assert_refused(capsys, code, flag, before, inputs, keys)
        assert not (inputs[key] / "new").exists()


# the folders other commands own; each command is refused inside one it does not own
OWNERS = ("train-joint", "data", "generate")


@pytest.mark.parametrize("command", [*COMMANDS, "demo --out"])
def test_an_output_inside_another_commands_folder_is_refused(command, inputs, tmp_path, capsys):
    if command == "demo --out":
        call, argv, keys, flag, is_file = main, (lambda out, i: ["demo", "--out", out]), [], "--out", False
    else:
        call, argv, keys, flag, is_file, _ = COMMANDS[command]
    own = {"data": "data", "generate --real --scale": "generate", "train_joint.py": "train-joint"}.get(command)
    for kind in OWNERS:
        if kind == own:
            continue
        owned = tmp_path / f"owned-{kind}"
        owned.mkdir()
        (owned / ".dakter.json").write_text(json.dumps({"kind": kind}))
        (owned / "precious.txt").write_text("mine")
        before = {k: snapshot(inputs[k]) for k in keys}
        target = owned / "sub" / ("out.json" if is_file else "out")
        code = _exit_code(call, argv(str(target), inputs))
        _assert_refused(capsys, code, flag, before, inputs, keys)
        assert tree(owned) == {".dakter.json": json.dumps({"kind": kind}).encode(), "precious.txt": b"mine"}


@pytest.mark.parametrize("command", [c for c, row in COMMANDS.items() if row[5]] + ["demo --out"])
def test_overwrite_replaces_only_what_the_same_command_wrote(command, inputs, tmp_path, capsys):
    if command == "demo --out":
        call, argv, keys, flag = main, (lambda out, i: ["demo", "--out", out]), [], "--out"
    else:
        call, argv, keys, flag = COMMANDS[command][:4]
    for marker in (None, "experiment-report" if command != "experiment --out" else "demo"):
        folder = tmp_path / f"theirs-{marker}"
        folder.mkdir()
        (folder / "precious.txt").write_text("mine")
        if marker:
            (folder / ".dakter.json").write_text(json.dumps({"kind": marker}))
        before = tree(folder)
        code = _exit_code(call, argv(str(folder), inputs) + ["--overwrite"])
        _assert_refused(capsys, code, flag, {k: snapshot(inputs[k]) for k in keys}, inputs, keys)
        assert tree(folder) == before
