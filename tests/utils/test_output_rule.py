"""`check_output_path` (the one rule for every path a command writes) and `check_generated`, on bare folders."""

import json
import os
import re

import pytest

from dakter_hf.errors import FolderError
from dakter_hf.utils.ownership import check_generated, check_output_path, claim_folder, describe_folder


def marked(folder, kind):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".dakter.json").write_text(json.dumps({"kind": kind}))
    return folder


def test_inputs_are_never_outputs(tmp_path):
    data = tmp_path / "box" / "data"
    data.mkdir(parents=True)
    (data / "a.txt").write_text("x")
    os.symlink(data, tmp_path / "link")
    for out, where in (
        (data, "is"),
        (data / "sub", "lies inside"),
        (tmp_path / "box", "holds"),
        (tmp_path / "link", "is"),
    ):
        with pytest.raises(FolderError, match=f"--out .*overlaps the input .*it {where} it"):
            check_output_path(str(out), [str(data)], kind="generate", flag="--out")
    assert check_output_path(str(tmp_path / "elsewhere"), [str(data)], kind="generate") == str(tmp_path / "elsewhere")
    check_output_path(str(tmp_path / "x"), [None, "", "absent/path", "org/hub-id"], kind="generate")


def test_folders_of_other_commands(tmp_path):
    joint = marked(tmp_path / "joint", "train-joint")
    with pytest.raises(FolderError, match="lies inside .*joint, a folder owned by `train_joint.py`"):
        check_output_path(str(joint / "deep" / "out"), kind="generate", flag="--out")
    with pytest.raises(FolderError, match=r"was written by `train-joint` \(`train_joint.py`\), not `dakter generate`"):
        check_output_path(str(joint), kind="generate", flag="--out", overwrite=True)
    check_output_path(str(joint / "pipeline"), kind="train-joint", flag="--output_dir")  # its own
    experiment = marked(tmp_path / "run", "experiment")
    check_output_path(str(experiment / "report"), kind="experiment-report", within=("experiment",))
    with pytest.raises(FolderError, match="owned by `dakter experiment`"):
        check_output_path(str(experiment / "report"), kind="experiment-report")


def test_overwrite_replaces_only_the_same_commands_folder(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(FolderError, match="not empty and was not written by `dakter generate`"):
        check_output_path(str(mine), kind="generate", overwrite=True)
    with pytest.raises(FolderError, match="--overwrite only replaces"):
        claim_folder(str(mine), "generate", {}, overwrite=True)
    assert (mine / "notes.txt").read_text() == "mine"
    own = marked(tmp_path / "own", "generate")
    (own / "shard").write_text("old")
    check_output_path(str(own), kind="generate", overwrite=True)
    claim_folder(str(own), "generate", {"new": 1}, overwrite=True)
    assert not (own / "shard").exists()
    check_output_path(str(tmp_path / "empty"), kind="generate", overwrite=True)


def test_paths_that_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FolderError, match="--json .*file is a file, not a folder"):
        check_output_path(str(tmp_path / "file" / "m.json"), kind="evaluate", flag="--json", file=True)
    with pytest.raises(FolderError, match="--json .* is a folder"):
        check_output_path(str(tmp_path), kind="evaluate", flag="--json", file=True)
    with pytest.raises(FolderError, match="--out .* is a file"):
        check_output_path(str(tmp_path / "file"), kind="segment", flag="--out")


def test_allowed_report_file_inside_an_input(tmp_path):
    generated = marked(tmp_path / "gen", "generate")
    report = str(generated / "quality.json")
    check_output_path(report, [str(generated)], kind="quality", flag="--json", allowed=[report], file=True)
    with pytest.raises(FolderError, match="overlaps the input"):
        check_output_path(str(generated / "README.md"), [str(generated)], kind="quality", allowed=[report], file=True)


def test_generated_means_generated(tmp_path):
    check_generated(str(marked(tmp_path / "gen", "generate")))
    for kind, words in (
        ("data", "a `dakter data` folder (real data)"),
        ("train-student", "a student's folder (`train_student.py`)"),
    ):
        with pytest.raises(FolderError, match=f"--generated .* is {re.escape(words)}, not a generated set"):
            check_generated(str(marked(tmp_path / kind, kind)))
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(FolderError, match="not written by `dakter generate`"):
        check_generated(str(plain))
    # a copy without marker (e.g. a Hub snapshot) is known by the card `dakter generate` writes
    (plain / "README.md").write_text(
        "---\ntags:\n- dakter\n- synthetic\n---\n\n# Generated SAR oil-spill images with soft labels (DAKTer)\n"
    )
    check_generated(str(plain))
    assert describe_folder(str(plain)) == "a `dakter generate` folder (generated data)"
