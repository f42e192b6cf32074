"""Fixed-width Markdown tables of `quality_report` results: one generated set, or several side by side."""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

from dakter_hf.utils.markdown import markdown_table


__all__ = ["format_quality_table", "format_quality_comparison"]


# rows of the table: (key in the per-dataset dict, label)
_TABLE_ROWS = [
    ("num_images", "images"),
    ("image_size", "image size (HxW)"),
    ("brightness_mean", "brightness mean (0..1)"),
    ("brightness_std", "brightness std (0..1)"),
    ("enl_median", "speckle ENL (median, sea)"),
    ("cv_median", "speckle CV (median, sea)"),
    ("speckle_windows", "sea tiles used"),
    ("high_freq_power_fraction", "power above 0.25 cyc/px"),
    ("oil_pixel_fraction", "oil pixel fraction"),
    ("images_with_oil_fraction", "fraction of images with oil"),
    ("oil_mean_inside", "brightness inside oil"),
    ("oil_mean_outside", "brightness outside oil"),
    ("oil_contrast", "oil contrast (out-in)/(out+in)"),
    ("oil_contrast_paired", "oil contrast, per image"),
]

_DISTANCE_ROWS = [
    ("histogram_js", "histogram Jensen-Shannon (0..1)"),
    ("histogram_w1", "histogram Wasserstein-1 (/255)"),
    ("spectrum_log10_mad", "spectrum mean abs. diff. of log10"),
]


def _format_value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{value[0]}x{value[1]}"
    return str(value)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """Fixed width: the label column first, then right-aligned numbers."""
    return markdown_table(header, rows, align=[None] + ["right"] * (len(header) - 1), pad=True)


def format_quality_table(report: Dict[str, object]) -> str:
    """Fixed-width markdown table of a :func:`~dakter_hf.evaluation.report.quality_report` result.

    One row per statistic with columns real | generated, then a second table of
    the real-vs-generated distances, then the notes as a bullet list.
    """
    return format_quality_comparison({"generated": report})


def format_quality_comparison(reports: Dict[str, Dict[str, object]]) -> str:
    """Several generated sets against the same real data: columns real | <name> | ...

    The real column comes from the first report (each was computed on the same real images).
    """
    names = list(reports)
    real = reports[names[0]].get("real", {})
    generated = [reports[name].get("generated", {}) for name in names]
    rows = [
        [label, _format_value(real.get(key))] + [_format_value(gen.get(key)) for gen in generated]
        for key, label in _TABLE_ROWS
        if key in real or any(key in gen for gen in generated)
    ]
    lines = _markdown_table(["statistic", "real"] + names, rows)
    distances = [reports[name].get("distance", {}) for name in names]
    drows = [
        [label] + [_format_value(d.get(key)) for d in distances]
        for key, label in _DISTANCE_ROWS
        if any(key in d for d in distances)
    ]
    if drows:
        header = ["distance (real vs generated)"] + (names if len(names) > 1 else ["value"])
        lines += [""] + _markdown_table(header, drows)
    notes = [(name, note) for name in names for note in reports[name].get("notes") or []]
    if notes:
        lines += ["", "Notes:"] + [f"- {note}" if len(names) == 1 else f"- {name}: {note}" for name, note in notes]
    return "\n".join(lines)
