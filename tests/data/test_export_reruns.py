"""`dakter data` again into its own folder: changed input files are noticed, an interrupted replace is undone."""

import os

import numpy as np
from helpers import tree
from PIL import Image

from dakter_hf.cli import main


def test_data_notices_changed_input_files_and_restores_an_interrupted_replace(tmp_path, capsys):
    source = tmp_path / "raw"
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(source / "images" / f"{name}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(source / "masks" / f"{name}.png")
    args = ["data", "--source", f"folder:{source}", "--classes", "background,oil", "--out", str(tmp_path / "ds")]
    assert main(args) == 0
    assert main(args) == 0 and "nothing to do" in capsys.readouterr().out
    Image.fromarray(np.full((8, 8), 50, np.uint8)).save(source / "images" / "c.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(source / "masks" / "c.png")
    before = tree(tmp_path / "ds")
    assert main(args) == 2 and "input files" in capsys.readouterr().err
    assert tree(tmp_path / "ds") == before
    # a run killed between the two renames of a replace leaves only NAME.old-*: it is put back
    os.replace(tmp_path / "ds", tmp_path / "ds.old-xyz")
    assert main(args) == 2  # refused (the source changed), but the old copy is back in place
    assert tree(tmp_path / "ds") == before and not (tmp_path / "ds.old-xyz").exists()
