"""Report statistics and tables (dakter_hf.experiment.tables) on hand-made runs with known numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from dakter_hf.experiment.tables import (
    parse_markdown_table,
    scale_points,
    summarize,
    table1_markdown,
    table4_markdown,
)


CLASSES = ["sea", "oil", "lookalike"]
REAL = {0: 0.60, 1: 0.62, 2: 0.58}


def metrics(miou, f1=None, oil_iou=None, precision=0.7, recall=0.8):
    """A test_metrics.json-like dict; the per-class numbers are derived so that each is known."""
    f1 = miou + 0.1 if f1 is None and miou is not None else f1
    per = {name: {"iou": miou, "f1": f1, "precision": precision, "recall": recall} for name in CLASSES}
    per["oil"] = dict(per["oil"], iou=oil_iou if oil_iou is not None else miou)
    return {
        "mean_iou": miou,
        "mean_f1": f1,
        "mean_precision": precision,
        "mean_recall": recall,
        "overall_accuracy": 0.9,
        "per_category": per,
    }


def run(arm, seed, miou, scale=1.0, student="unet", **kw):
    return {"arm": arm, "student": student, "scale": scale, "seed": seed, "metrics": metrics(miou, **kw)}


def make_runs():
    runs = [run("real", s, v, scale=0.0) for s, v in REAL.items()]
    runs += [run("dakter_kd", s, REAL[s] + d, scale=1.0) for s, d in zip(REAL, (0.049, 0.052, 0.050))]
    runs += [run("dakter_kd", s, REAL[s] + d, scale=0.5) for s, d in zip(REAL, (0.02, 0.03, 0.01))]
    runs += [run("ddpm", s, REAL[s] + d, scale=1.0) for s, d in zip(REAL, (0.02, -0.03, 0.01))]
    runs += [run("worse", s, REAL[s] - d, scale=1.0) for s, d in zip(REAL, (0.05, 0.06, 0.04))]
    runs += [run("single", 0, 0.70, scale=1.0)]
    return runs


@pytest.fixture(scope="module")
def summary():
    return summarize(make_runs(), baseline_arm="real", class_names=CLASSES)


def row(summary, arm, scale=1.0, table="table1"):
    scale = None if arm == "real" else scale
    return next(r for r in summary[table] if r["arm"] == arm and r["scale"] == scale)


def pct(x):
    return f"{100 * x:.2f}"


def test_means_and_stds_match_numpy(summary):
    for arm, scale in [("real", None), ("dakter_kd", 1.0), ("ddpm", 1.0)]:
        r = row(summary, arm, scale)
        values = np.array(r["miou"]["values"])
        assert r["n"] == 3 and r["seeds"] == [0, 1, 2]
        assert r["miou"]["mean"] == pytest.approx(values.mean())
        assert r["miou"]["std"] == pytest.approx(values.std(ddof=1))
        assert r["f1"]["mean"] == pytest.approx((values + 0.1).mean())
    assert row(summary, "real")["miou"]["values"] == list(REAL.values())
    assert row(summary, "real")["vs_baseline"] is None
    single = row(summary, "single")
    assert single["n"] == 1 and single["miou"]["std"] is None


def test_verdicts(summary):
    better = row(summary, "dakter_kd")["vs_baseline"]
    assert set(better) == {"miou", "f1"}
    assert better["miou"]["verdict"] == "better" and better["miou"]["ci_low"] > 0
    assert better["miou"]["mean_diff"] == pytest.approx(np.mean([0.049, 0.052, 0.050]))
    assert better["f1"]["verdict"] == "better"
    assert row(summary, "ddpm")["vs_baseline"]["miou"]["verdict"] == "no clear difference"
    worse = row(summary, "worse")["vs_baseline"]["miou"]
    assert worse["verdict"] == "worse" and worse["ci_high"] < 0
    single = row(summary, "single")["vs_baseline"]["miou"]
    assert single["verdict"] == "too few paired seeds" and single["n_pairs"] == 1
    assert single["ci_low"] is None and single["ci_high"] is None and single["p_value"] is None
    assert single["mean_diff"] == pytest.approx(0.10)


@pytest.mark.parametrize("arm,scale", [("dakter_kd", 1.0), ("dakter_kd", 0.5), ("ddpm", 1.0), ("worse", 1.0)])
def test_paired_ci_and_p_match_an_independent_computation(summary, arm, scale):
    c = row(summary, arm, scale)["vs_baseline"]["miou"]
    d = np.array(row(summary, arm, scale)["miou"]["values"]) - np.array(list(REAL.values()))
    n = len(d)
    half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
    assert c["n_pairs"] == n
    assert c["ci_low"] == pytest.approx(d.mean() - half)
    assert c["ci_high"] == pytest.approx(d.mean() + half)
    assert c["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), n - 1))


def test_pairs_only_the_shared_seeds_and_the_confidence_level():
    runs = [run("real", s, v, scale=None) for s, v in REAL.items()]
    runs += [run("kd", s, 0.65 + 0.01 * s) for s in (1, 2, 3)]  # seed 3 has no baseline, seed 0 no kd
    c = summarize(runs, confidence=0.8)["table1"][1]["vs_baseline"]["miou"]
    d = np.array([0.66 - 0.62, 0.67 - 0.58])
    half = stats.t.ppf(0.9, 1) * d.std(ddof=1) / math.sqrt(2)
    assert c["n_pairs"] == 2 and c["seeds"] == [1, 2]
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))


def test_identical_differences_do_not_warn_or_break_json():
    runs = [run("real", s, 0.5) for s in range(3)] + [run("kd", s, 0.5) for s in range(3)]
    with np.errstate(all="raise"):
        c = summarize(runs)["table1"][1]["vs_baseline"]["miou"]
    assert c["verdict"] == "no clear difference" and c["ci_low"] == c["ci_high"] == 0.0
    json.dumps(c, allow_nan=False)


def test_row_order_and_baseline_scale():
    runs = [
        run("b_arm", 0, 0.5, scale=2.0),
        run("a_arm", 0, 0.5, scale=1.0),
        run("b_arm", 0, 0.5, scale=0.5),
        run("real", 0, 0.5, scale=0.0),
        run("a_arm", 0, 0.5, student="aaa"),
        run("real", 0, 0.5, student="aaa"),
    ]
    keys = [(r["student"], r["arm"], r["scale"]) for r in summarize(runs)["table1"]]
    assert keys == [
        ("aaa", "real", None),
        ("aaa", "a_arm", 1.0),
        ("unet", "real", None),
        ("unet", "b_arm", 0.5),
        ("unet", "b_arm", 2.0),
        ("unet", "a_arm", 1.0),
    ]
    assert [(r["student"], r["arm"], r["scale"]) for r in summarize(runs)["table4"]] == keys


def test_duplicate_run_raises():
    with pytest.raises(ValueError, match="two runs"):
        summarize([run("real", 0, 0.5), run("real", 0, 0.6)])


def test_table4_per_class(summary):
    r = row(summary, "dakter_kd", table="table4")
    values = np.array(row(summary, "dakter_kd")["miou"]["values"])
    assert [c["class"] for c in r["classes"]] == CLASSES
    assert r["classes"][1]["iou"]["mean"] == pytest.approx(values.mean())
    assert r["classes"][1]["iou"]["std"] == pytest.approx(values.std(ddof=1))
    assert r["classes"][0]["precision"] == {
        "mean": pytest.approx(0.7),
        "std": pytest.approx(0.0),
        "median": pytest.approx(0.7),
    }
    assert r["means"]["mf1"]["mean"] == pytest.approx(values.mean() + 0.1)
    assert set(r["means"]) == {"miou", "mf1", "mp", "mr"}


def test_missing_values_are_none_left_out_and_na():
    runs = [
        run("real", 0, 0.5, oil_iou=float("nan")),
        run("real", 1, 0.7),
        run("real", 2, float("nan")),
        run("kd", 0, 0.6),
        run("kd", 1, None),
        run("kd", 2, 0.9),
    ]
    runs[1]["metrics"]["per_category"]["oil"]["iou"] = None  # as a JSON null
    s = summarize(runs)  # class names from per_category
    json.dumps(s, allow_nan=False)
    real, kd = s["table1"]
    assert real["miou"]["values"] == [0.5, 0.7, None]
    assert real["miou"]["mean"] == pytest.approx(0.6) and real["miou"]["std"] == pytest.approx(
        np.std([0.5, 0.7], ddof=1)
    )
    c = kd["vs_baseline"]["miou"]
    assert c["n_pairs"] == 1 and c["mean_diff"] == pytest.approx(0.1) and c["verdict"] == "too few paired seeds"
    oil = s["table4"][0]["classes"][1]
    assert oil["class"] == "oil" and oil["iou"] == {"mean": None, "std": None, "median": None}
    md4 = parse_markdown_table(table4_markdown(s))
    assert md4[0]["IoU oil"] == "n/a" and md4[0]["mIoU"] == f"{pct(0.6)} ± {pct(real['miou']['std'])}"
    md1 = parse_markdown_table(table1_markdown(s))
    assert md1[1]["Δ mIoU vs real (95 % CI)"] == "+10.00" and md1[1]["p (mIoU)"] == "n/a"


def test_summary_is_strict_json(summary):
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_table1_markdown_matches_the_json(summary):
    text = table1_markdown(summary)
    parsed = parse_markdown_table(text)
    assert len(parsed) == len(summary["table1"])
    assert "paired" in text and "n pairs = 1, 3" in text
    for cells, r in zip(parsed, summary["table1"]):
        assert (cells["Student"], cells["Arm"], cells["n"]) == (r["student"], r["arm"], str(r["n"]))
        expected = pct(r["miou"]["mean"]) if r["n"] == 1 else f"{pct(r['miou']['mean'])} ± {pct(r['miou']['std'])}"
        assert cells["mIoU (%)"] == expected
        if r["vs_baseline"] is None:
            assert cells["Scale"] == "-" and cells["Verdict (mIoU)"] == "-"
            continue
        c = r["vs_baseline"]["miou"]
        assert cells["Scale"] == f"{r['scale']:g}" and cells["Verdict (mIoU)"] == c["verdict"]
        diff = f"{100 * c['mean_diff']:+.2f}"
        if c["ci_low"] is None:
            assert cells["Δ mIoU vs real (95 % CI)"] == diff and cells["p (mIoU)"] == "n/a"
        else:
            ci = f"[{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}]"
            assert cells["Δ mIoU vs real (95 % CI)"] == f"{diff} {ci}"
            assert float(cells["p (mIoU)"].lstrip("<")) == pytest.approx(c["p_value"], abs=1e-3)
        assert cells["Verdict (F1)"] == r["vs_baseline"]["f1"]["verdict"]


def test_table4_markdown_matches_the_json(summary):
    parsed = parse_markdown_table(table4_markdown(summary))
    assert len(parsed) == len(summary["table4"])
    for cells, r in zip(parsed, summary["table4"]):
        for c in r["classes"]:
            for short, m in (("IoU", "iou"), ("P", "precision"), ("R", "recall")):
                got = cells[f"{short} {c['class']}"].split(" ± ")
                assert got[0] == pct(c[m]["mean"])
                assert got[1:] == ([] if c[m]["std"] is None else [pct(c[m]["std"])])
        assert cells["mR"].split(" ± ")[0] == pct(r["means"]["mr"]["mean"])


def test_parse_markdown_table():
    text = "intro\n\n| a | b |\n|---:|:---|\n| 1 | x y |\n| 2 |  |\n\nlegend | not a row"
    assert parse_markdown_table(text) == [{"a": "1", "b": "x y"}, {"a": "2", "b": ""}]
    assert parse_markdown_table("no table") == []


def test_scale_points(summary):
    points = scale_points(summary)
    real = row(summary, "real")["miou"]
    assert points["real"] == [(None, real["mean"], real["std"])]
    kd = points["dakter_kd"]
    assert [p[0] for p in kd] == [0.5, 1.0]
    assert kd[1][1:] == (row(summary, "dakter_kd")["miou"]["mean"], row(summary, "dakter_kd")["miou"]["std"])
    assert scale_points(summary, "f1")["ddpm"][0][1] == pytest.approx(row(summary, "ddpm")["f1"]["mean"])
    two = summarize(make_runs() + [run("real", 0, 0.5, student="segformer")])
    with pytest.raises(ValueError, match="several students"):
        scale_points(two)
    assert scale_points(two, student="segformer") == {"real": [(None, 0.5, None)]}
