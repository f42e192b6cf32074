"""Markdown tables: the one table writer of the package, and the percent cell of its metric tables."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Union


__all__ = ["markdown_table", "percent"]

Align = Optional[str]  # None (Markdown's default: left), "left" or "right"


def percent(value: Optional[float]) -> str:
    """A fraction as a percent cell with 2 decimals; "n/a" when missing (None or NaN)."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def markdown_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    align: Union[Align, Sequence[Align]] = None,
    pad: bool = False,
) -> List[str]:
    """The lines of a Markdown table: header, alignment rule, one line per row.

    `align` is one alignment for every column or one per column: None (no colon, shown left),
    "left" (":---") or "right" ("---:"). With `pad=True` every column is as wide as its widest
    cell (right-aligned columns are right-justified), so the table also reads as plain text.
    """
    if align is None or isinstance(align, str):
        align = [align] * len(header)
    if len(align) != len(header):
        raise ValueError(f"{len(align)} alignments for {len(header)} columns")
    for a in align:
        if a not in (None, "left", "right"):
            raise ValueError(f"alignment must be None, 'left' or 'right', got {a!r}")
    if pad:
        widths = [max([len(header[c])] + [len(r[c]) for r in rows]) for c in range(len(header))]
    else:
        widths = [0] * len(header)

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                cell.rjust(widths[c]) if align[c] == "right" else cell.ljust(widths[c]) for c, cell in enumerate(cells)
            )
            + " |"
        )

    def rule(c: int) -> str:
        dashes = "-" * (widths[c] + 2 - (align[c] is not None)) if pad else "---"  # padded: as wide as the cells
        return {None: dashes, "left": ":" + dashes, "right": dashes + ":"}[align[c]]

    return [line(header), "|" + "|".join(rule(c) for c in range(len(header))) + "|"] + [line(r) for r in rows]
