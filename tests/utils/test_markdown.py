"""The one Markdown table writer and its percent cell."""

import math

import pytest

from dakter_hf.utils.markdown import markdown_table, percent


def test_plain_table():
    assert markdown_table(["a", "bb"], [["1", "x y"], ["22", ""]]) == [
        "| a | bb |",
        "|---|---|",
        "| 1 | x y |",
        "| 22 |  |",
    ]


def test_alignment_rules():
    assert markdown_table(["a", "b"], [], align="right")[1] == "|---:|---:|"
    assert markdown_table(["a", "b", "c"], [], align=[None, "left", "right"])[1] == "|---|:---|---:|"
    with pytest.raises(ValueError, match="alignments"):
        markdown_table(["a", "b"], [], align=["right"])
    with pytest.raises(ValueError, match="alignment"):
        markdown_table(["a"], [], align="centre")


def test_padded_table_reads_as_plain_text():
    lines = markdown_table(
        ["statistic", "real", "x"],
        [["mean", "0.5", "12.25"], ["a long label", "1", "2"]],
        align=[None, "right", "right"],
        pad=True,
    )
    assert lines == [
        "| statistic    | real |     x |",
        "|--------------|-----:|------:|",
        "| mean         |  0.5 | 12.25 |",
        "| a long label |    1 |     2 |",
    ]
    assert len({len(line) for line in lines}) == 1


def test_percent():
    assert percent(0.12345) == "12.35"
    assert percent(1) == "100.00"
    assert percent(None) == percent(math.nan) == "n/a"
