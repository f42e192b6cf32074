"""`dakter data` and `dakter balance`, run in-process through dakter_hf.cli.main (and once as the console script)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from helpers import reference_b
from PIL import Image

from dakter_hf.cli import main


def _b_line(text, prefix="b = "):
    match = re.search(re.escape(prefix) + r"(-?\d+\.\d{4})\b", text)
    assert match, f"no '{prefix}<value with 4 decimals>' in output:\n{text}"
    return float(match.group(1))


# --- console script -------------------------------------------------------------


def test_console_script_installed():
    script = shutil.which("dakter", path=str(Path(sys.executable).parent)) or shutil.which("dakter")
    assert script, "the `dakter` console script is not installed (pip install -e .)"
    result = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 0, result.stderr
    assert "data" in result.stdout and "balance" in result.stdout
    result = subprocess.run(
        [script, "data", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0 and "--overwrite" in result.stdout


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


# --- dakter data ------------------------------------------------------------------


def test_data_writes_hf_and_parquet(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "--source", "simulate:8", "--size", "32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    saved = datasets.load_from_disk(str(out / "hf"))
    assert isinstance(saved, datasets.DatasetDict) and list(saved) == ["train"]
    assert len(saved["train"]) == 8
    shards = sorted(os.listdir(out / "data"))
    assert shards == ["train-00000-of-00001.parquet"]

    parquet = datasets.load_dataset("parquet", data_dir=str(out / "data"), cache_dir=str(tmp_path / "parquet_cache"))
    assert list(parquet) == ["train"]
    assert parquet["train"].features == saved["train"].features
    assert isinstance(parquet["train"].features["image"], datasets.Image)
    assert parquet["train"].features["classes"] == datasets.List(datasets.ClassLabel(names=["background", "oil"]))
    assert parquet["train"]["id"] == saved["train"]["id"]
    for index in (0, 7):
        a, b = saved["train"][index], parquet["train"][index]
        np.testing.assert_array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
        np.testing.assert_array_equal(np.asarray(a["mask"]), np.asarray(b["mask"]))
        assert a["classes"] == b["classes"] and a["source"] == b["source"]
    raw_saved = saved["train"].cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"]
    raw_parquet = parquet["train"].cast_column("image", datasets.Image(decode=False))[0]["image"]["bytes"]
    assert raw_saved and raw_saved == raw_parquet

    # the printed b is the factor of the written training split
    b = _b_line(printed, "balancing factor b = ")
    images = [np.asarray(row["image"]) for row in saved["train"]]
    masks = [np.asarray(row["mask"]) for row in saved["train"]]
    assert b == pytest.approx(reference_b(images, masks, 2), abs=6e-5)
    assert "8 images" in printed
    assert str(out / "hf") in printed
    # nothing else left beside OUT
    assert sorted(os.listdir(tmp_path)) == ["out", "parquet_cache"]


def test_existing_out_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "--source", "simulate:3", "--size", "32", "--out", str(out)]) == 0
    (out / "keep.txt").write_text("old content")
    capsys.readouterr()

    assert main(["data", "--source", "simulate:2", "--size", "32", "--seed", "5", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "--overwrite" in captured.err and str(out) in captured.err
    assert (out / "keep.txt").read_text() == "old content"
    assert len(datasets.load_from_disk(str(out / "hf"))["train"]) == 3

    assert (
        main(["data", "--source", "simulate:2", "--size", "32", "--seed", "5", "--out", str(out), "--overwrite"]) == 0
    )
    assert not (out / "keep.txt").exists()
    replaced = datasets.load_from_disk(str(out / "hf"))["train"]
    assert len(replaced) == 2 and replaced["id"] == ["sim5_000000", "sim5_000001"]
    assert sorted(os.listdir(out / "data")) == ["train-00000-of-00001.parquet"]
    assert os.listdir(tmp_path) == ["out"]  # no staging or backup folder left


def test_failing_source_leaves_nothing(tmp_path, capsys):
    parent = tmp_path / "work"
    parent.mkdir()
    out = parent / "out"
    missing = tmp_path / "nonexistent"
    assert main(["data", "--source", f"sos:{missing}", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert str(missing) in captured.err
    assert not out.exists()
    assert os.listdir(parent) == []
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]


@pytest.mark.parametrize(
    "argv",
    [
        ["--source", "simulate:0"],
        ["--source", "simulate:many"],
        ["--source", "simulate:4", "--split", "test"],
        ["--source", "folder:{tmp}"],  # no --classes
        ["--source", "{tmp}/not_a_dataset"],
    ],
)
def test_other_failing_sources_return_2(tmp_path, capsys, argv):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = tmp_path / "out"
    assert main(["data", *argv, "--size", "32", "--out", str(out)]) == 2
    assert "error" in capsys.readouterr().err
    assert not out.exists()


def test_data_from_a_saved_folder_round_trips(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["data", "--source", "simulate:3", "--size", "32", "--out", str(first)]) == 0
    assert main(["data", "--source", str(first), "--out", str(second)]) == 0
    a = datasets.load_from_disk(str(first / "hf"))["train"]
    b = datasets.load_from_disk(str(second / "hf"))["train"]
    assert a.features == b.features and a["id"] == b["id"]
    np.testing.assert_array_equal(np.asarray(a[2]["image"]), np.asarray(b[2]["image"]))


# --- dakter balance ---------------------------------------------------------------


def test_balance_on_sos_train(sos_root, capsys):
    assert main(["balance", "--data", f"sos:{sos_root}", "--sensor", "palsar", "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\bb = 0\.4\d{3}\b", out), out
    assert "1000 images" in out and "native size" in out


@pytest.fixture(scope="module")
def sos_first_50(sos_root, tmp_path_factory):
    """The first 50 SOS PALSAR training pairs saved as a small dataset (in a temp folder, never in the repo)."""
    from dakter_hf.data import load_sos

    train = load_sos(sos_root, sensor="palsar", split="train")["train"].select(range(50))
    folder = tmp_path_factory.mktemp("sos50") / "saved"
    datasets.DatasetDict({"train": train}).save_to_disk(str(folder))
    return str(folder), train["id"]


def test_balance_matches_numpy_reference_on_sos(sos_root, sos_first_50, capsys):
    folder, ids = sos_first_50
    assert main(["balance", "--data", folder, "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "50 images" in out
    # reference straight from the SOS files: grey image, mask > 127
    images, masks = [], []
    for sample_id in ids:
        with Image.open(os.path.join(sos_root, "train", "palsar", f"{sample_id}_sat.jpg")) as raw:
            images.append(np.asarray(raw.convert("L")))
        with Image.open(os.path.join(sos_root, "train", "palsar", f"{sample_id}_mask.png")) as raw:
            masks.append((np.asarray(raw.convert("L")) > 127).astype(np.uint8))
    expected = reference_b(images, masks, 2)
    assert _b_line(out) == pytest.approx(expected, abs=6e-5)
    assert 0.3 < expected < 0.6


def test_balance_resolution_averages_speckle_away(sos_first_50, capsys):
    folder, _ = sos_first_50
    assert main(["balance", "--data", folder]) == 0  # --split defaults to train
    native = _b_line(capsys.readouterr().out)
    assert main(["balance", "--data", folder, "--resolution", "64"]) == 0
    out = capsys.readouterr().out
    assert "64x64" in out and "50 images" in out
    small = _b_line(out)
    assert small < native - 0.02


def test_balance_missing_split_returns_2(tmp_path, capsys):
    saved = tmp_path / "saved"
    assert main(["data", "--source", "simulate:2", "--size", "32", "--out", str(saved)]) == 0
    capsys.readouterr()
    assert main(["balance", "--data", str(saved), "--split", "test"]) == 2
    assert "test" in capsys.readouterr().err
