"""Statistics and Markdown tables of the experiment report (Table 1: arms vs real; Table 4: per class).

Everything is computed once into a JSON-serialisable summary (`summarize`); the
Markdown is rendered from that summary, so a test can parse a table back
(`parse_markdown_table`) and check it against the JSON. Missing numbers (None or
NaN, e.g. a class absent from the test split) are None in the JSON, "n/a" in
the tables, and left out of every mean and std.

An arm is compared with the baseline arm PAIRED over the seeds both share (a
seed fixes the real-data order and the initialisation): Student-t interval on
the per-seed differences and a two-sided paired t-test. With 3 seeds the
interval is wide (t_{0.975,2} = 4.30), so "no clear difference" is not "equal".
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from dakter_hf.utils.markdown import markdown_table, percent


__all__ = [
    "summarize",
    "table1_markdown",
    "table4_markdown",
    "per_seed_markdown",
    "parse_markdown_table",
    "scale_points",
    "labelled_points",
]

# Table 1 metric -> key of a run's metrics dict (test_metrics.json).
TABLE1_METRICS = {"miou": "mean_iou", "f1": "mean_f1"}
# Table 1's calibration column (lower is better; shown without a paired test), n/a for runs without it.
TABLE1_CALIBRATION = {"ece": "ece"}
# Table 4 means -> key of a run's metrics dict.
TABLE4_MEANS = {"miou": "mean_iou", "mf1": "mean_f1", "mp": "mean_precision", "mr": "mean_recall"}
CLASS_METRICS = ("iou", "precision", "recall")


def _value(x: Any) -> Optional[float]:
    """A metric as a python float, or None when missing (None/NaN), so JSON stays strict."""
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _stats(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
    """Mean, sample std (ddof=1) and median over the present values; std None below 2 values."""
    present = [v for v in values if v is not None]
    mean = float(np.mean(present)) if present else None
    std = float(np.std(present, ddof=1)) if len(present) >= 2 else None
    return {"mean": mean, "std": std, "median": float(np.median(present)) if present else None}


def _paired(metric: str, arm: Dict[int, Optional[float]], base: Dict[int, Optional[float]], confidence: float) -> dict:
    """Paired comparison arm - baseline over the seeds where both have a value."""
    seeds = sorted(s for s in arm if s in base and arm[s] is not None and base[s] is not None)
    diffs = np.array([arm[s] - base[s] for s in seeds], dtype=np.float64)
    out = {
        "metric": metric,
        "n_pairs": len(seeds),
        "seeds": seeds,
        "mean_diff": float(diffs.mean()) if len(seeds) else None,
        "n_above": int((diffs > 0).sum()),  # seeds where the arm is above the baseline of the same seed
        "ci_low": None,
        "ci_high": None,
        "p_value": None,
        "verdict": "too few paired seeds",
    }
    if len(seeds) < 2:
        return out
    half = stats.t.ppf((1 + confidence) / 2, len(seeds) - 1) * diffs.std(ddof=1) / math.sqrt(len(seeds))
    with warnings.catch_warnings():  # identical differences: scipy warns and may give NaN (-> None)
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_rel([arm[s] for s in seeds], [base[s] for s in seeds]).pvalue
    low, high = out["mean_diff"] - half, out["mean_diff"] + half
    verdict = "better" if low > 0 else "worse" if high < 0 else "no clear difference"
    out.update(ci_low=float(low), ci_high=float(high), p_value=_value(p), verdict=verdict)
    return out


def _class_value(metrics: Mapping, name: str, index: int, metric: str) -> Optional[float]:
    """Per-class value from ``per_category`` or, failing that, the ``per_category_<metric>`` list."""
    per = metrics.get("per_category")
    if per is not None:
        return _value(per.get(name, {}).get(metric))
    values = metrics.get(f"per_category_{metric}")
    return _value(values[index]) if values is not None and index < len(values) else None


def _fraction(run: Mapping) -> float:
    """The real fraction a run trained on (1.0, the full split, for runs that do not say)."""
    return float(run.get("fraction") or 1.0)


def _groups(runs: Sequence[Mapping], baseline_arm: str) -> Dict[tuple, List[Mapping]]:
    """Runs by (student, arm, scale, fraction), sorted as the tables are; the baseline's scale becomes None."""
    arm_order: Dict[str, int] = {baseline_arm: -1}
    groups: Dict[tuple, Dict[int, Mapping]] = {}
    for run in runs:
        arm_order.setdefault(run["arm"], len(arm_order))
        scale = None if run["arm"] == baseline_arm or run.get("scale") is None else float(run["scale"])
        group = groups.setdefault((run["student"], run["arm"], scale, _fraction(run)), {})
        if int(run["seed"]) in group:
            raise ValueError(
                f"two runs for {run['student']}/{run['arm']}/scale {scale}/fraction {_fraction(run):g}/seed "
                f"{run['seed']}"
            )
        group[int(run["seed"])] = run

    # students with a baseline run first (a joint model as a segmenter has none: its rows come last)
    paired = {student for student, arm, _, _ in groups if arm == baseline_arm}

    def order(key):
        student, arm, scale, fraction = key
        return (fraction, student not in paired, student, arm_order[arm], scale is not None, scale or 0.0)

    return {key: [groups[key][s] for s in sorted(groups[key])] for key in sorted(groups, key=order)}


def summarize(
    runs: Sequence[Mapping],
    baseline_arm: str = "real",
    confidence: float = 0.95,
    class_names: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Table 1 and Table 4 as one JSON-able dict (see the report in the module docstring)."""
    if class_names is None:  # union of the runs' per_category keys, in order of appearance
        class_names = list(dict.fromkeys(n for r in runs for n in (r["metrics"].get("per_category") or {})))
    groups = _groups(runs, baseline_arm)
    by_seed = {
        key: {m: {int(r["seed"]): _value(r["metrics"].get(k)) for r in group} for m, k in TABLE1_METRICS.items()}
        for key, group in groups.items()
    }
    table1, table4 = [], []
    for (student, arm, scale, fraction), group in groups.items():
        labelled = {r.get("num_labelled") for r in group} - {None}
        head = {
            "student": student,
            "arm": arm,
            "scale": scale,
            "fraction": fraction,
            "num_labelled": labelled.pop() if len(labelled) == 1 else None,
            "budget": group[0].get("budget"),
            "steps": [r.get("steps") for r in group],
            "n": len(group),
            "seeds": [int(r["seed"]) for r in group],
        }
        row1 = dict(head)
        for m, k in TABLE1_METRICS.items():
            values = [_value(r["metrics"].get(k)) for r in group]
            row1[m] = {**_stats(values), "values": values}
        for m, k in TABLE1_CALIBRATION.items():
            values = [_value(r["metrics"].get(k)) for r in group]
            row1[m] = {**_stats(values), "values": values}
        # a student without a real-only run of its own (the joint model as a segmenter) has nothing to pair with
        base = by_seed.get((student, baseline_arm, None, fraction))
        row1["vs_baseline"] = (
            None
            if arm == baseline_arm or base is None
            else {
                m: _paired(m, by_seed[(student, arm, scale, fraction)][m], base[m], confidence) for m in TABLE1_METRICS
            }
        )
        table1.append(row1)
        classes = [
            {
                "class": name,
                **{m: _stats([_class_value(r["metrics"], name, i, m) for r in group]) for m in CLASS_METRICS},
            }
            for i, name in enumerate(class_names)
        ]
        means = {m: _stats([_value(r["metrics"].get(k)) for r in group]) for m, k in TABLE4_MEANS.items()}
        table4.append({**head, "means": means, "classes": classes})
    return {
        "baseline_arm": baseline_arm,
        "confidence": confidence,
        "class_names": list(class_names),
        "table1": table1,
        "table4": table4,
    }


# ---------------------------------------------------------------- Markdown


def _signed(value: Optional[float]) -> str:
    """A difference in percentage points with its sign, "n/a" when missing."""
    return "n/a" if value is None else f"{round(100 * value, 2) + 0.0:+.2f}"  # + 0.0: no "-0.00"


def _mean_std(s: Mapping) -> str:
    """ "mean ± std" in percent; just the mean when there is no std (one seed)."""
    if s["mean"] is None or s["std"] is None:
        return percent(s["mean"])
    return f"{percent(s['mean'])} ± {percent(s['std'])}"


def _delta(c: Mapping) -> str:
    if c["ci_low"] is None:
        return _signed(c["mean_diff"])
    return f"{_signed(c['mean_diff'])} [{_signed(c['ci_low'])}, {_signed(c['ci_high'])}]"


def _p(p: Optional[float]) -> str:
    return "n/a" if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def _scale(row: Mapping, baseline_arm: str) -> str:
    return "-" if row["arm"] == baseline_arm else "n/a" if row["scale"] is None else f"{row['scale']:g}"


def _render(header: List[str], rows: List[List[str]], legend: str) -> str:
    return "\n".join(markdown_table(header, rows) + ["", legend]) + "\n"


def _rows(summary: Mapping, table: str, fraction: Optional[float]) -> List[Mapping]:
    """The rows of one real fraction (all rows when `fraction` is None)."""
    return [r for r in summary[table] if fraction is None or r.get("fraction", 1.0) == fraction]


def fractions_of(summary: Mapping) -> List[float]:
    """The real fractions of a summary, ascending."""
    return sorted({r.get("fraction", 1.0) for r in summary["table1"]})


def _median(s: Mapping) -> str:
    return percent(s.get("median"))


def _above(c: Optional[Mapping]) -> str:
    """ "k/n": the paired seeds where the arm is above the baseline of the same seed."""
    return "-" if not c else f"{c.get('n_above', 0)}/{c['n_pairs']}"


def table1_markdown(summary: Mapping, fraction: Optional[float] = None) -> str:
    """Table 1: mIoU and F1 per (student, arm, scale) of one real fraction (all rows when None),
    with the median, the paired difference to the baseline and the seeds above it."""
    base, conf = summary["baseline_arm"], f"{100 * summary['confidence']:g} %"
    header = [
        "Student",
        "Arm",
        "Scale",
        "n",
        "mIoU (%)",
        "median mIoU (%)",
        f"seeds above {base} (mIoU)",
        "F1 (%)",
        "ECE (%)",
        f"Δ mIoU vs {base} ({conf} CI)",
        "p (mIoU)",
        "Verdict (mIoU)",
        f"Δ F1 vs {base} ({conf} CI)",
        "p (F1)",
        "Verdict (F1)",
    ]
    rows, pairs = [], set()
    for r in _rows(summary, "table1", fraction):
        cells = [
            r["student"],
            r["arm"],
            _scale(r, base),
            str(r["n"]),
            _mean_std(r["miou"]),
            _median(r["miou"]),
            _above((r["vs_baseline"] or {}).get("miou")),
            _mean_std(r["f1"]),
            _mean_std(r.get("ece") or {"mean": None, "std": None}),
        ]
        for m in TABLE1_METRICS:
            c = (r["vs_baseline"] or {}).get(m)
            cells += [_delta(c), _p(c["p_value"]), c["verdict"]] if c else ["-", "-", "-"]
            pairs.update([c["n_pairs"]] if c else [])
        rows.append(cells)
    fewest = min((n for n in pairs if n >= 2), default=None)
    width = (
        ""
        if fewest is None
        else f"With n = {fewest} pairs the interval is t = "
        f"{stats.t.ppf((1 + summary['confidence']) / 2, fewest - 1):.2f} standard errors wide on each side: "
    )
    legend = (
        f"Percent, mean ± sample std over seeds. Δ: arm − {base} in points, paired over shared seeds "
        f"(n pairs = {', '.join(map(str, sorted(pairs))) or 'n/a'}), {conf} Student-t interval on the "
        f"per-seed differences; p: two-sided paired t-test. {width}'no clear difference' does not mean equal. "
        f"Seeds above {base}: paired seeds where the arm's mIoU is above {base}'s of the same seed. "
        "ECE: expected calibration error of the top-class probability per test pixel (15 bins; lower is "
        "better; not temperature-scaled)."
    )
    return _render(header, rows, legend)


def table4_markdown(summary: Mapping, fraction: Optional[float] = None) -> str:
    """Table 4: mean metrics and per-class IoU / precision / recall per (student, arm, scale)."""
    base, names = summary["baseline_arm"], summary["class_names"]
    header = ["Student", "Arm", "Scale", "n", "mIoU", "mF1", "mP", "mR"]
    header += [f"{short} {name}" for name in names for short in ("IoU", "P", "R")]
    rows = []
    for r in _rows(summary, "table4", fraction):
        cells = [r["student"], r["arm"], _scale(r, base), str(r["n"])]
        cells += [_mean_std(r["means"][m]) for m in TABLE4_MEANS]
        cells += [_mean_std(c[m]) for c in r["classes"] for m in CLASS_METRICS]
        rows.append(cells)
    legend = (
        "Percent, mean ± sample std (ddof=1) over the n seeds; n/a: missing or class absent in every "
        "seed (left out of the means). With n = 3 the std is itself very uncertain."
    )
    return _render(header, rows, legend)


def per_seed_markdown(summary: Mapping, fraction: Optional[float] = None, metric: str = "miou") -> str:
    """Every seed's value of `metric` per (student, arm, scale), beside the median and mean ± std."""
    base = summary["baseline_arm"]
    rows_in = _rows(summary, "table1", fraction)
    seeds = sorted({s for r in rows_in for s in r["seeds"]})
    header = ["Student", "Arm", "Scale", "steps", *[f"seed {s}" for s in seeds], "median", "mean ± std"]
    header.append(f"seeds above {base}")
    rows = []
    for r in rows_in:
        values = dict(zip(r["seeds"], r[metric]["values"]))
        steps = sorted({s for s in r.get("steps", []) if s is not None})
        step_text = "-" if not steps else str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
        cells = [r["student"], r["arm"], _scale(r, base), step_text]
        cells += [percent(values[s]) if s in values else "-" for s in seeds]
        cells += [_median(r[metric]), _mean_std(r[metric]), _above((r["vs_baseline"] or {}).get(metric))]
        rows.append(cells)
    legend = (
        f"Percent; one column per seed (a seed fixes the real-data order and the initialisation); steps: the "
        f"optimizer steps the students trained. Seeds above {base}: seeds where the arm is above {base} of the "
        "same seed."
    )
    return _render(header, rows, legend)


def parse_markdown_table(text: str) -> List[Dict[str, str]]:
    """The first Markdown table in `text` as [{header: cell}] (the alignment rule is skipped)."""
    lines = [ln.strip() for ln in text.splitlines()]
    start = next((i for i, ln in enumerate(lines) if ln.startswith("|")), len(lines))
    table = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        table.append([cell.strip() for cell in ln.strip("|").split("|")])
    if not table:
        return []
    header, body = table[0], [r for r in table[1:] if not all(set(c) <= set(":-") for c in r)]
    return [dict(zip(header, r)) for r in body]


def scale_points(
    summary: Mapping, metric: str = "miou", student: Optional[str] = None, fraction: Optional[float] = None
) -> Dict[str, List[Tuple[Optional[float], Optional[float], Optional[float]]]]:
    """{arm: [(scale, mean, std), ...]} by scale, for a plot of `metric` vs augmentation scale.

    The baseline arm is under its own name with one point of scale None (draw it
    as a horizontal line). `metric` is a Table 1 metric ("miou" or "f1");
    `student` may be left out only when the summary has a single student.
    """
    students = list(dict.fromkeys(r["student"] for r in summary["table1"]))
    if student is None:
        if len(students) != 1:
            raise ValueError(f"several students {students}: pass student=")
        student = students[0]
    fraction = fractions_of(summary)[-1] if fraction is None else fraction
    points: Dict[str, List[tuple]] = {}
    for r in _rows(summary, "table1", fraction):  # already sorted by scale within an arm
        if r["student"] == student:
            points.setdefault(r["arm"], []).append((r["scale"], r[metric]["mean"], r[metric]["std"]))
    return points


def labelled_points(
    summary: Mapping, student: str, metric: str = "miou", scale: Optional[float] = None
) -> Dict[str, List[Tuple[int, List[float]]]]:
    """{arm: [(number of labelled images, [value per seed]), ...]} by labelled images, for the plot of
    `metric` against the labels; arms with generated data at `scale` (default: each arm's largest)."""
    chosen: Dict[tuple, Mapping] = {}
    for r in summary["table1"]:
        if r["student"] != student or r.get("num_labelled") is None:
            continue
        key = (r["arm"], r.get("fraction", 1.0))
        if scale is not None and r["scale"] is not None and r["scale"] != scale:
            continue
        if key not in chosen or (r["scale"] or 0.0) > (chosen[key]["scale"] or 0.0):
            chosen[key] = r
    points: Dict[str, List[tuple]] = {}
    for (arm, _), r in sorted(chosen.items(), key=lambda item: item[1]["num_labelled"]):
        values = [v for v in r[metric]["values"] if v is not None]
        if values:
            points.setdefault(arm, []).append((int(r["num_labelled"]), values))
    return points
