"""Fixed-width Markdown tables of `quality_report` results: one generated set, or several side by side.

`format_soft_label_tables` renders the soft-label statistics and the per-image class fractions
(:mod:`dakter_hf.evaluation.soft_labels`): `dakter quality` prints them below the quality table, and
the experiment report shows them as "What the soft labels carry"."""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

from dakter_hf.utils.markdown import markdown_table


__all__ = ["format_quality_table", "format_quality_comparison", "format_soft_label_tables"]


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
    the real-vs-generated distances, then the notes as a bullet list, then the
    soft-label tables of :func:`format_soft_label_tables`.
    """
    reports = {"generated": report}
    text = format_quality_comparison(reports)
    soft = format_soft_label_tables(reports)
    return text + ("\n\nWhat the soft labels carry:\n\n" + soft if soft else "")


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


def _fraction(value) -> str:
    """A fraction (0..1) as a percent with 2 decimals, "n/a" when missing."""
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _soft_rows(soft: Dict[str, object]) -> List[tuple]:
    """(label, value) rows of one set's soft-label statistics; labels name its T, threshold and band width."""
    t, threshold, w = soft["kd_temperature"], soft["threshold"], soft["boundary_width"]
    return [
        ("pixels (images)", f"{soft['num_pixels']} ({soft['num_images']})"),
        (f"mean entropy, T = 1 (bits, max log2 C = {soft['entropy_bits_max']:.3g})", soft["entropy_bits_mean"]),
        (f"mean entropy, T = {t:g} (bits)", soft["entropy_bits_mean_kd"]),
        (f"top probability < {threshold:g}, T = 1", _fraction(soft["top_below_threshold"])),
        (f"top probability < {threshold:g}, T = {t:g}", _fraction(soft["top_below_threshold_kd"])),
        (f"pixels within {w} px of a class boundary", _fraction(soft["band_pixel_fraction"])),
        (f"mean entropy within {w} px of a boundary (bits)", soft["band_entropy_bits_mean"]),
        (f"mean entropy farther than {w} px (bits)", soft["interior_entropy_bits_mean"]),
        ("share of the entropy near boundaries", _fraction(soft["band_entropy_share"])),
        ("argmax of the soft label = stored mask", _fraction(soft["argmax_matches_mask"])),
    ]


def _cell(value) -> str:
    return value if isinstance(value, str) else _format_value(value)


def format_soft_label_tables(reports: Dict[str, Dict[str, object]]) -> str:
    """The soft-label statistics and per-image class fractions of one or several quality reports.

    Three tables: the soft-label statistics (one column per generated set; "n/a" for a set without
    soft labels), the entropy histogram (share of pixels per bin), and the per-image class fractions
    (mean, quantiles, share of images holding the class, 1-D Wasserstein distance to the real
    per-image fractions; real first, then each set). "" when no report has either.
    """
    names = list(reports)
    lines: List[str] = []
    softs = {name: reports[name].get("soft_labels") for name in names}
    with_soft = [name for name in names if softs[name]]
    if with_soft:
        per_set = {name: _soft_rows(softs[name]) for name in with_soft}
        labels = [label for label, _ in per_set[with_soft[0]]]
        rows = [
            [label] + [_cell(per_set[name][i][1]) if name in per_set else "n/a" for name in names]
            for i, label in enumerate(labels)
        ]
        lines += _markdown_table(["soft labels (generated)"] + names, rows)
        first = softs[with_soft[0]]
        edges = first["entropy_histogram"]["edges"]
        hrows = [
            [f"{edges[i]:.3f} - {edges[i + 1]:.3f}"]
            + [
                _fraction(softs[name]["entropy_histogram"]["fractions"][i])
                if name in per_set and len(softs[name]["entropy_histogram"]["fractions"]) == len(edges) - 1
                else "n/a"
                for name in names
            ]
            for i in range(len(edges) - 1)
        ]
        lines += [""] + _markdown_table(["entropy, T = 1 (bits)"] + [f"{n}: pixels" for n in names], hrows)
    missing = [name for name in names if not softs[name]]
    if with_soft and missing:
        lines += ["", f"No soft labels (L2 labels?): {', '.join(missing)}."]
    fractions = {name: reports[name].get("class_fractions") for name in names if reports[name].get("class_fractions")}
    if fractions:
        first = next(iter(fractions.values()))
        quantiles = first["quantiles"]
        header = ["class", "masks", "mean"] + [f"{100 * q:g} %" for q in quantiles] + ["images with it", "W1 vs real"]
        rows = []

        def row(cls, label, dist, w1):
            return (
                [cls, label, _format_value(dist["mean"])]
                + [_format_value(v) for v in dist["quantiles"]]
                + [
                    _fraction(dist["images_with_class"]),
                    w1,
                ]
            )

        for cls in first["per_class"]:
            shown = []  # each set is measured against its own real masks (an experiment's fractions differ)
            for name, result in fractions.items():
                other = result["per_class"].get(cls)
                if other is None:
                    continue
                if other["real"] not in shown:
                    same = [
                        n for n, r in fractions.items() if (r["per_class"].get(cls) or {}).get("real") == other["real"]
                    ]
                    rows.append(
                        row(cls, "real" if len(same) == len(fractions) else f"real ({same[0]})", other["real"], "-")
                    )
                    shown.append(other["real"])
                rows.append(row(cls, name, other["generated"], _format_value(other["w1"])))
        if lines:
            lines.append("")
        lines += _markdown_table(header, rows)
        lines += [
            "",
            "Per-image fraction of each class's pixels: mean, quantiles over images, the share of images holding the "
            "class, and the 1-D Wasserstein distance between the generated and the real per-image fractions.",
        ]
    return "\n".join(lines)
