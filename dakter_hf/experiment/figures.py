"""Figures for the experiment report: real vs generated (paper Fig. 7), soft labels (Fig. 2),
metric vs augmentation scale (Fig. 5), metric vs the number of labelled images (label scarcity) and
training curves, plus readers for the loss logs.

Every figure comes back as a PIL image, so callers never touch matplotlib state; image grids
are drawn with PIL (reusing :mod:`dakter_hf.data.visualize`), plots with an Agg canvas of their own.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from dakter_hf.data.features import class_names_of, oil_class_index
from dakter_hf.data.visualize import PALETTE, _heat, softmax_probability, triplet_grid
from dakter_hf.utils.files import atomic_path


logger = logging.getLogger(__name__)

PAD = 2
LABEL_HEIGHT = 14  # room for one line of PIL's default font above a block


def save_png(image_or_figure, path: str) -> str:
    """Write a PIL image or matplotlib figure as PNG through a temporary name: no half-written figure."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as temporary:
        if isinstance(image_or_figure, Image.Image):
            image_or_figure.save(temporary, format="PNG")
        else:
            image_or_figure.savefig(temporary, format="png")
    return path


def _grey(image, size: int) -> np.ndarray:
    return np.asarray(image.convert("L").resize((size, size), Image.BILINEAR), dtype=np.uint8)


def _mask(mask, size: int) -> np.ndarray:
    """Class ids resized with nearest neighbour, so no in-between ids are invented."""
    return np.asarray(mask.resize((size, size), Image.NEAREST), dtype=np.int64)


def _pairs_block(rows, label: str, num_samples: int, size: int) -> np.ndarray:
    """One labelled row of (image | mask) pairs as an RGB array."""
    width = num_samples * (2 * size + 4 * PAD) + PAD
    block = np.full((LABEL_HEIGHT + size + PAD, width, 3), 255, dtype=np.uint8)
    for k, row in enumerate(rows):
        left = PAD + k * (2 * size + 4 * PAD)
        block[LABEL_HEIGHT : LABEL_HEIGHT + size, left : left + size] = _grey(row["image"], size)[..., None]
        block[LABEL_HEIGHT : LABEL_HEIGHT + size, left + size + PAD : left + 2 * size + PAD] = PALETTE[
            _mask(row["mask"], size) % len(PALETTE)
        ]
    picture = Image.fromarray(block)
    ImageDraw.Draw(picture).text((PAD, 1), label, fill=(0, 0, 0))
    return np.asarray(picture)


def real_vs_generated_figure(
    real, generated: Mapping[str, object], num_samples: int = 4, seed: int = 0, size: int = 128
) -> Image.Image:
    """Blocks "real", then one per generated set, of (image | mask) pairs at a common display size.

    Real rows are a seeded random pick (real sets are ordered by scene, the first rows look
    alike); generated rows are the first ones (already random draws). `real=None` leaves the
    real block out (data whose licence does not allow showing it, e.g. in a published report).
    """
    blocks = []
    if real is not None:
        picks = np.random.default_rng(seed).choice(len(real), size=min(num_samples, len(real)), replace=False)
        blocks.append(_pairs_block([real[int(i)] for i in picks], "real", num_samples, size))
    for name, dataset in generated.items():
        rows = [dataset[i] for i in range(min(num_samples, len(dataset)))]
        blocks.append(_pairs_block(rows, str(name), num_samples, size))
    return Image.fromarray(np.concatenate(blocks, axis=0))


def soft_label_figure(generated, num_samples: int = 4, size: int = 96) -> Image.Image:
    """Per sample: image | oil probability (heat map, colour bar 0..1) | argmax mask."""
    if "soft_label" not in generated.column_names:
        raise ValueError(f"soft_label_figure needs a 'soft_label' column; this dataset has {generated.column_names}")
    rows = generated.select(range(min(num_samples, len(generated))))
    soft = np.stack([np.asarray(s, dtype=np.float32) for s in rows.with_format("numpy")["soft_label"]])
    probability = softmax_probability(soft, oil_class_index(class_names_of(generated)))
    images = np.stack([_grey(image, size) / 255.0 for image in rows["image"]])
    probability = np.stack(
        [
            np.asarray(Image.fromarray(p.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))
            for p in probability
        ]
    )
    masks = np.stack([_mask(Image.fromarray(m.astype(np.uint8)), size) for m in soft.argmax(axis=1)])
    grid = triplet_grid(images, masks, probability, columns=1, pad=PAD)
    return _with_titles_and_colour_bar(grid, size)


def _with_titles_and_colour_bar(grid: Image.Image, size: int) -> Image.Image:
    """Column titles above the triplet grid and a 0..1 heat-map bar on its right."""
    bar_width, text_width = 10, 14
    canvas = Image.new("RGB", (grid.width + 3 * PAD + bar_width + text_width, grid.height + LABEL_HEIGHT), "white")
    canvas.paste(grid, (0, LABEL_HEIGHT))
    bar_height = grid.height - 2 * PAD
    ramp = _heat(np.linspace(1, 0, bar_height))[:, None, :].repeat(bar_width, axis=1)
    left = grid.width + PAD
    canvas.paste(Image.fromarray(ramp), (left, LABEL_HEIGHT + PAD))
    draw = ImageDraw.Draw(canvas)
    for k, title in enumerate(["image", "P(oil)", "argmax"]):
        draw.text((PAD + k * (size + PAD), 1), title, fill=(0, 0, 0))
    draw.text((left + bar_width + PAD, LABEL_HEIGHT), "1", fill=(0, 0, 0))
    draw.text((left + bar_width + PAD, canvas.height - LABEL_HEIGHT), "0", fill=(0, 0, 0))
    return canvas


def _render(figure) -> Image.Image:
    """Draw a matplotlib Figure on its own Agg canvas (no pyplot, no global backend switch)."""

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def scale_curve_figure(
    points: Mapping[str, Sequence[tuple]], metric_name: str = "mIoU", baseline: Optional[tuple] = None
) -> Image.Image:
    """Metric mean ± std per arm against augmentation scale (shown as %), real-only baseline as a band."""

    figure = Figure(figsize=(5, 3.5), dpi=100)
    axes = figure.add_subplot()
    scales = sorted({float(p[0]) for arm in points.values() for p in arm})
    for arm, arm_points in points.items():
        scale, mean, std = (np.array(column, dtype=np.float64) for column in zip(*sorted(arm_points)))
        axes.errorbar(scale, mean, yerr=std, marker="o", capsize=3, label=str(arm))
    if baseline is not None:
        mean, std = baseline
        axes.axhline(mean, color="grey", linestyle="--", label="real only")
        axes.axhspan(mean - std, mean + std, color="grey", alpha=0.15)
    axes.set_xticks(scales, [f"{s * 100:g}%" for s in scales])
    axes.set_xlabel("generated images (% of real set)")
    axes.set_ylabel(metric_name)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return _render(figure)


def pooled_reliability(reliabilities: Sequence[Mapping]) -> Optional[Dict[str, np.ndarray]]:
    """Sum the reliability bins of several runs (e.g. seeds): counts add, means are count-weighted.

    Each entry is a metrics ``reliability`` dict ({bins, count, confidence, accuracy}; None or NaN
    for an empty bin, as JSON has it). None when no entry has a pixel.
    """
    entries = [r for r in reliabilities if r and sum(r.get("count") or []) > 0]
    if not entries:
        return None
    count = np.zeros(len(entries[0]["count"]), dtype=np.float64)
    confidence, accuracy = np.zeros_like(count), np.zeros_like(count)
    for entry in entries:
        n = np.asarray(entry["count"], dtype=np.float64)
        count += n
        for total, key in ((confidence, "confidence"), (accuracy, "accuracy")):
            values = np.array([np.nan if v is None else v for v in entry[key]], dtype=np.float64)
            total += np.where(n > 0, np.nan_to_num(values) * n, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"count": count, "confidence": confidence / count, "accuracy": accuracy / count}


def reliability_figure(curves: Mapping[str, Mapping], title: str = "reliability (test pixels)") -> Image.Image:
    """Reliability diagram: accuracy against mean top-class confidence per bin, one line per name.

    `curves` maps a name to a `pooled_reliability` dict. The diagonal is perfect calibration (below it:
    over-confident); the lower panel shows the share of pixels per bin (log scale).
    """
    figure = Figure(figsize=(5, 5), dpi=100)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for index, (name, bins) in enumerate(curves.items()):
        filled = np.asarray(bins["count"]) > 0
        colour = f"C{index % 10}"
        conf, acc, count = (np.asarray(bins[k], dtype=np.float64)[filled] for k in ("confidence", "accuracy", "count"))
        top.plot(conf, acc, marker="o", markersize=4, color=colour, label=str(name))
        bottom.plot(conf, count / count.sum(), marker=".", color=colour)
    top.set_ylabel("accuracy")
    top.set_title(title)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    bottom.set_yscale("log")
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("pixels")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    return _render(figure)


def _smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard-style exponential moving average; weight 0 leaves values unchanged."""
    out, running = np.empty_like(values), values[0]
    for i, value in enumerate(values):
        running = weight * running + (1 - weight) * value
        out[i] = running
    return out


def _use_log_scale(values: Sequence[float]) -> bool:
    """Log y when all values are positive and span more than two decades."""
    values = np.asarray(values, dtype=np.float64)
    return values.size > 0 and bool((values > 0).all()) and values.max() / values.min() > 100


def training_curves_figure(
    curves: Mapping[str, Sequence[tuple]], title: str, ylabel: str = "loss", smoothing: float = 0.0
) -> Image.Image:
    """One line per name from (step, value) pairs.

    `smoothing` in [0, 1) is an exponential moving average weight (0 = raw); when smoothing,
    the raw curve is drawn faintly behind so spikes stay visible.
    """

    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    everything = []
    for index, (name, pairs) in enumerate(curves.items()):
        if not pairs:
            continue
        step, value = (np.array(column, dtype=np.float64) for column in zip(*sorted(pairs)))
        everything.extend(value.tolist())
        colour = f"C{index % 10}"
        if smoothing > 0:
            axes.plot(step, value, color=colour, alpha=0.25, linewidth=0.8)
        axes.plot(step, _smooth(value, smoothing) if smoothing > 0 else value, color=colour, label=str(name))
    if _use_log_scale(everything):
        axes.set_yscale("log")
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if everything:
        axes.legend()
    figure.tight_layout()
    return _render(figure)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def joint_loss_curve(output_dir: str) -> Dict[str, List[Tuple[int, float]]]:
    """Every finite numeric "*loss*" key of train_joint's loss_history.jsonl, as (step, value) lists.

    Unreadable lines (a half-written last line of a running job) are skipped; a non-empty
    file with no readable line at all is an error, since that is not a loss history.
    """
    path = os.path.join(output_dir, "loss_history.jsonl")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        lines = [line for line in handle if line.strip()]
    curves: Dict[str, List[Tuple[int, float]]] = {}
    parsed = 0
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            logger.warning("skipping unreadable line %d of %s", number, path)
            continue
        parsed += 1
        for key, value in record.items():
            if "loss" in key and _is_number(value):
                curves.setdefault(key, []).append((step, float(value)))
    if lines and not parsed:
        raise ValueError(f"{path} has no readable JSON line: not a loss history")
    return curves


def _newest_checkpoint_state(folder: str) -> Optional[str]:
    states = glob.glob(os.path.join(folder, "checkpoint-*", "trainer_state.json"))
    numbered = [
        (int(m.group(1)), s)
        for s in states
        if (m := re.search(r"checkpoint-(\d+)", os.path.basename(os.path.dirname(s))))
    ]
    return max(numbered)[1] if numbered else None


def student_loss_curve(folder: str) -> List[Tuple[int, float]]:
    """(step, loss) from a Trainer's trainer_state.json log_history (else the newest checkpoint's)."""
    path = os.path.join(folder, "trainer_state.json")
    if not os.path.isfile(path):
        path = _newest_checkpoint_state(folder)
        if path is None:
            return []
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    return [
        (int(entry["step"]), float(entry["loss"]))
        for entry in state.get("log_history", [])
        if "step" in entry and _is_number(entry.get("loss"))
    ]


def labelled_curve_figure(
    points: Mapping[str, Sequence[Tuple[int, Sequence[float]]]], metric_name: str = "test mIoU", title: str = ""
) -> Image.Image:
    """Metric (shown as %) against the number of labelled images: per arm the mean over seeds as a line,
    the seeds' range as a band and every seed as a dot (`tables.labelled_points` gives the points)."""

    figure = Figure(figsize=(5.5, 3.8), dpi=100)
    axes = figure.add_subplot()
    counts = sorted({int(p[0]) for arm in points.values() for p in arm})
    for index, (arm, arm_points) in enumerate(points.items()):
        colour = f"C{index % 10}"
        ordered = sorted(arm_points, key=lambda p: p[0])
        x = np.array([p[0] for p in ordered], dtype=np.float64)
        values = [100 * np.asarray(p[1], dtype=np.float64) for p in ordered]
        mean = np.array([v.mean() for v in values])
        axes.plot(x, mean, marker="o", color=colour, label=str(arm))
        if any(len(v) > 1 for v in values):
            low, high = np.array([v.min() for v in values]), np.array([v.max() for v in values])
            axes.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)
        for xi, v in zip(x, values):
            axes.scatter(np.full(len(v), xi), v, color=colour, s=10, alpha=0.6)
    if counts and counts[-1] > 4 * max(counts[0], 1):
        axes.set_xscale("log")
    axes.set_xticks(counts, [str(c) for c in counts])
    axes.minorticks_off()
    axes.set_xlabel("labelled real images")
    axes.set_ylabel(f"{metric_name} (%)")
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _render(figure)
