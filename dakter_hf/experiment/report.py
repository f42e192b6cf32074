"""The experiment report: `report.md` + `report.json` + figures, rebuilt from the cached steps.

Every number in the Markdown is rendered from `report.json` (tables from `tables.py`), and
the report names the experiment file (path, sha256, full text) and the code version.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Optional

from dakter_hf.data.features import class_names_of
from dakter_hf.data.sources import load_saved
from dakter_hf.evaluation.formatting import format_quality_comparison, format_soft_label_tables
from dakter_hf.experiment import figures
from dakter_hf.experiment.steps import code_description, read_done
from dakter_hf.experiment.subsets import images_with_oil, subset_summary
from dakter_hf.experiment.tables import (
    fractions_of,
    labelled_points,
    per_seed_markdown,
    scale_points,
    summarize,
    table1_markdown,
    table4_markdown,
)
from dakter_hf.utils.files import atomic_write_json, atomic_write_text
from dakter_hf.utils.ownership import FolderLock, claim_folder


def _arm_titles(config) -> Dict[str, str]:
    return {arm.name: arm.title or arm.name for arm in config.arms}


def _version_text(code: Dict[str, Any]) -> str:
    if not code:
        return "not recorded"
    text = f"dakter-hf {code['package_version']}"
    return text + (
        f", git {code['git_commit']}{' with uncommitted changes' if code['git_dirty'] else ''}"
        if code.get("git_commit")
        else ""
    )


def _step_code(runner, done: Dict[str, Dict[str, Any]]) -> Dict[str, List[str]]:
    """Which code computed which cached steps (steps are reused within a package version)."""
    versions: Dict[str, List[str]] = {}
    for step in runner.plan.steps:
        versions.setdefault(_version_text(done[step.key].get("code")), []).append(f"{step.kind} {step.label}")
    return versions


def _fraction_name(fraction: float) -> str:
    return f"{100 * fraction:g} % of the labels"


def _generated_sets(runner) -> Dict[str, Dict[str, Any]]:
    """One entry per distinct generated set, named by the arms that use it (and its real fraction when
    the experiment has several)."""
    sets: Dict[str, Dict[str, Any]] = {}
    several = len(runner.config.real_fractions) > 1
    for (arm, fraction), step in runner.plan.generated_of_arm.items():
        entry = sets.setdefault(
            step.key,
            {
                "arms": [],
                "fraction": fraction,
                "generate": step,
                "joint": runner.plan.joint_of_arm[(arm, fraction)],
                "quality": runner.plan.quality_of_arm[(arm, fraction)],
            },
        )
        entry["arms"].append(arm)
    return {
        " / ".join(entry["arms"]) + (f" ({_fraction_name(entry['fraction'])})" if several else ""): entry
        for entry in sets.values()
    }


SEGMENTER_STUDENT = "joint model (segmenter)"


def _runs(runner) -> List[Dict[str, Any]]:
    """Every student run, and every evaluation of a joint model as a segmenter, as the tables read them."""
    plan = runner.plan
    runs = []
    for r in plan.runs:
        result = runner.result(r["step"])
        runs.append(
            {
                "arm": r["arm"],
                "student": r["student"],
                "scale": r["scale"],
                "seed": r["seed"],
                "fraction": r["fraction"],
                "num_labelled": runner.num_labelled(r["fraction"]),
                "budget": r["budget"],
                "planned_steps": runner.planned_steps(r["step"]),
                "metrics": result["metrics"],
                "steps": result.get("steps"),
                "step": os.path.relpath(r["step"].folder(runner.root), runner.root),
            }
        )
    for r in plan.segmenter_runs:
        settings = r["step"].settings
        runs.append(
            {
                "arm": r["arm"],
                "student": SEGMENTER_STUDENT,
                "scale": None,
                "seed": r["seed"],
                "fraction": r["fraction"],
                "num_labelled": runner.num_labelled(r["fraction"]),
                "budget": None,
                "planned_steps": None,
                "label_timestep": settings["label_timestep"],
                "metrics": runner.result(r["step"])["metrics"],
                "steps": None,
                "step": os.path.relpath(r["step"].folder(runner.root), runner.root),
            }
        )
    return runs


def _fractions(runner) -> Dict[str, Dict[str, Any]]:
    """Per real fraction: its labelled images, their oil share and the subset step (none for the full split)."""
    out = {}
    for fraction, step in runner.plan.data_of_fraction.items():
        result = runner.result(step)
        if "num_with_oil" not in result:  # the full split: its oil counts read here (the data step has none)
            flags = images_with_oil(runner._train_split())
            result = {**result, **subset_summary(flags, list(range(len(flags))))}
        out[f"{fraction:g}"] = {
            "fraction": fraction,
            "num_labelled": runner.num_labelled(fraction),
            "subset_seed": step.settings.get("seed") if step.kind == "subset" else None,
            "num_with_oil": result.get("num_with_oil"),
            "oil_share": result.get("oil_share"),
            "full_oil_share": result.get("full_oil_share"),
            "b": runner.result(runner.plan.balance_of_fraction[fraction])["b"],
            "step": os.path.relpath(step.folder(runner.root), runner.root),
        }
    return out


def write_report(runner) -> Dict[str, Any]:
    """Write report.json, report.md and the figures into the report folder; returns the JSON."""
    out = runner.config.report_dir
    with FolderLock(out, flag="report_dir"):
        claim_folder(out, "experiment-report", {"experiment": runner.config.name}, flag="report_dir")
        return _write_report(runner, out)


def _write_report(runner, out: str) -> Dict[str, Any]:
    config, plan = runner.config, runner.plan
    runs = _runs(runner)
    data = runner.result(plan.data)
    real_train = load_saved(runner.work(plan.data), split=config.data["train_split"])[config.data["train_split"]]
    summary = summarize(runs, baseline_arm=config.baseline, class_names=class_names_of(real_train))
    sets = _generated_sets(runner)
    generated_models = {
        name: {
            "arms": entry["arms"],
            "joint": {k: v for k, v in runner.result(entry["joint"]).items() if k in ("b", "steps")},
            "joint_settings": entry["joint"].settings,
            "fraction": entry["fraction"],
            "num_samples": runner.result(entry["generate"])["num_samples"],
            "generation": entry["generate"].settings,
            "curation": (runner.result(entry["generate"]).get("curation") or {}).get("oil_fraction"),
            "quality": runner.result(entry["quality"]),
        }
        for name, entry in sets.items()
    }
    figure_paths = _write_figures(runner, out, real_train, sets, summary)
    done = {step.key: read_done(step.folder(runner.root)) for step in plan.steps}  # one read of each step's record
    text = config.text
    report = {
        "experiment": config.name,
        "description": config.description,
        "config": {
            "path": os.path.relpath(config.path),
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "text": text,
        },
        "code": code_description(),
        "step_code": _step_code(runner, done),
        "data": {"source": config.data["source"], "splits": data["splits"]},
        "real_fractions": _fractions(runner),
        "budget": config.budget,
        "budgets": {arm.name: config.budget_of(arm) if arm.uses_generated else "equal_steps" for arm in config.arms},
        "balancing_factor": runner.result(plan.balance),
        "arms": {
            arm.name: {
                "title": arm.title,
                "student_mode": arm.mode,
                "joint_overrides": arm.joint,
                "generation_overrides": arm.generation,
                "teacher": arm.teacher,
            }
            for arm in config.arms
        },
        "generated_sets": generated_models,
        "summary": summary,
        "runs": [dict(r.items()) for r in runs],
        "figures": {name: os.path.basename(path) for name, path in figure_paths.items()},
        "show_real_images": config.show_real_images,
        "timings": [
            {"kind": step.kind, "label": step.label, "seconds": done[step.key]["seconds"]} for step in plan.steps
        ],
        "paths": {
            "markdown": os.path.relpath(os.path.join(out, "report.md")),
            "json": os.path.relpath(os.path.join(out, "report.json")),
            "steps": os.path.relpath(config.output_dir),
        },
    }
    atomic_write_json(os.path.join(out, "report.json"), report)
    atomic_write_text(os.path.join(out, "report.md"), render_markdown(report, _arm_titles(config)))
    return report


def _write_figures(runner, out: str, real_train, sets: Dict[str, Dict[str, Any]], summary) -> Dict[str, str]:
    config, paths = runner.config, {}
    generated = {
        name: load_saved(runner.work(entry["generate"]), split="train")["train"] for name, entry in sets.items()
    }
    if generated:
        real = real_train if config.show_real_images else None
        paths["real_vs_generated"] = figures.save_png(
            figures.real_vs_generated_figure(real, generated), os.path.join(out, "real_vs_generated.png")
        )
        soft = {name: ds for name, ds in generated.items() if "soft_label" in ds.column_names}
        if soft:
            name = next(
                (
                    n
                    for n, entry in sets.items()
                    if n in soft and entry["joint"].settings.get("label_loss", "ce") == "ce"
                ),
                next(iter(soft)),
            )
            paths["soft_labels"] = figures.save_png(
                figures.soft_label_figure(soft[name]), os.path.join(out, "soft_labels.png")
            )
        curves = {}
        for name, entry in sets.items():
            for key, points in figures.joint_loss_curve(runner.work(entry["joint"])).items():
                if key == "loss":
                    curves[name] = points
        if curves:
            paths["joint_loss"] = figures.save_png(
                figures.training_curves_figure(curves, "joint model: training loss", smoothing=0.6),
                os.path.join(out, "joint_loss.png"),
            )
    student_curves, several = {}, len(config.real_fractions) > 1
    for run in runner.plan.runs:
        if run["seed"] == config.seeds[0]:
            label = f"{run['student']} {run['arm']}" + (
                f" x{run['scale']:g}" if run["scale"] is not None and len(config.scales) > 1 else ""
            )
            label += f" ({run['fraction']:g})" if several else ""
            student_curves[label] = figures.student_loss_curve(runner.work(run["step"]))
    if any(student_curves.values()):
        paths["student_loss"] = figures.save_png(
            figures.training_curves_figure(
                student_curves, f"students: training loss (seed {config.seeds[0]})", smoothing=0.6
            ),
            os.path.join(out, "student_loss.png"),
        )
    _reliability_figures(runner, out, paths)
    if len(config.scales) > 1:
        for student in sorted({r["student"] for r in runner.plan.runs}):
            points = scale_points(summary, student=student)
            base = points.pop(config.baseline, None)
            baseline = (base[0][1], base[0][2] or 0.0) if base and base[0][1] is not None else None
            # arms without generated data (teacher KD) have no scale; a missing std draws no bar
            points = {
                arm: [
                    (scale, mean, float("nan") if std is None else std) for scale, mean, std in p if mean is not None
                ]
                for arm, p in points.items()
                if all(point[0] is not None for point in p)
            }
            paths[f"scale_{student}"] = figures.save_png(
                figures.scale_curve_figure(points, baseline=baseline), os.path.join(out, f"scale_{student}.png")
            )
    if several:  # the label-scarcity figure: test mIoU against the labelled images, one line per arm
        titles = _arm_titles(config)
        for student in sorted({r["student"] for r in runner.plan.runs}):
            points = labelled_points(summary, student)
            points = {titles.get(arm, arm): p for arm, p in points.items()}
            segmenter = labelled_points(summary, SEGMENTER_STUDENT)
            points.update({f"joint model as segmenter ({arm})": p for arm, p in segmenter.items()})
            if points:
                paths[f"labels_{student}"] = figures.save_png(
                    figures.labelled_curve_figure(points, title=f"{student}: test mIoU against the labels"),
                    os.path.join(out, f"labels_{student}.png"),
                )
    return paths


RELIABILITY_ARMS = ("real", "dakter-no-kd", "dakter-kd")  # real only vs without KD vs KD


def _reliability_figures(runner, out: str, paths: Dict[str, str]) -> None:
    """One reliability diagram per student: its runs' test-pixel bins pooled over seeds (and scales) per arm."""
    largest = runner.config.real_fractions[-1]  # pooled over the seeds (and scales) of the largest fraction
    runs, titles = [r for r in runner.plan.runs if r["fraction"] == largest], _arm_titles(runner.config)
    arms = [a for a in RELIABILITY_ARMS if a in {r["arm"] for r in runs}]
    if len(arms) < 2:  # none of the paper's trio beside real only: every arm
        arms = [a.name for a in runner.config.arms]
    for student in sorted({r["student"] for r in runs}):
        curves = {}
        for arm in arms:
            bins = [
                runner.result(r["step"])["metrics"].get("reliability")
                for r in runs
                if r["student"] == student and r["arm"] == arm
            ]
            pooled = figures.pooled_reliability(bins)
            if pooled is not None:
                curves[titles.get(arm, arm)] = pooled
        if curves:
            figure = figures.reliability_figure(curves, f"{student}: reliability on the test pixels")
            paths[f"reliability_{student}"] = figures.save_png(figure, os.path.join(out, f"reliability_{student}.png"))


def _steps_line(runs: List[Dict[str, Any]], budgets: Optional[Dict[str, str]] = None) -> str:
    """How long each arm's students trained, under which budget (`budgets`: arm -> equal_steps/equal_epochs)."""
    by_arm: Dict[str, List] = {}
    for run in runs:
        if run.get("student") != SEGMENTER_STUDENT:
            by_arm.setdefault(run["arm"], []).append(run.get("steps"))
    parts = []
    for arm, steps in by_arm.items():
        known = [s for s in steps if s is not None]
        parts.append(
            f"{arm} "
            + ("n/a" if not known else f"{min(known)}" if min(known) == max(known) else f"{min(known)}-{max(known)}")
            + (f" ({budgets[arm].replace('_', ' ')})" if budgets and arm in budgets else "")
        )
    return "Optimizer steps per student (over seeds): " + ", ".join(parts) + "."


BUDGET_TEXT = {
    "equal_steps": "every arm trains the student's max_steps",
    "equal_epochs": "the paper's protocol: an arm with generated data trains round(max_steps x (n_real + "
    "n_generated) / n_real) steps, as many passes over real + generated as the real arm makes over the real images",
}


def _budget_lines(report: Dict[str, Any]) -> List[str]:
    budgets = report.get("budgets")
    if not budgets:
        return []
    used = sorted(set(budgets.values()))
    return [
        f"Student budget: {', '.join(f'`{b}` ({BUDGET_TEXT[b]})' for b in used)}; per arm: "
        + ", ".join(f"{arm} {b.replace('_', ' ')}" for arm, b in budgets.items())
        + ".",
        "",
    ]


def _verdict_lines(summary: Dict[str, Any], fraction: float) -> List[str]:
    """The answer in words, before the table: each arm's mIoU against the baseline, paired over seeds."""
    rows = [r for r in summary["table1"] if r.get("fraction", 1.0) == fraction and r.get("vs_baseline")]
    if not rows:
        return []
    base = summary["baseline_arm"]
    lines = [f"In short (test mIoU against `{base}` of the same seeds, 95 % interval of the paired difference):", ""]
    for row in rows:
        c = row["vs_baseline"]["miou"]
        scale = "" if row["scale"] is None else f" x{row['scale']:g}"
        if c.get("ci_low") is None:
            lines.append(f"- {row['student']}, {row['arm']}{scale}: {c['verdict']}.")
            continue
        lines.append(  # the metrics are fractions; the table and this line speak in points
            f"- {row['student']}, {row['arm']}{scale}: {100 * c['mean_diff']:+.2f} points [{100 * c['ci_low']:+.2f}, "
            f"{100 * c['ci_high']:+.2f}], above `{base}` on {c['n_above']} of {c['n_pairs']} seeds: "
            f"**{c['verdict']}**."
        )
    if not any(r["vs_baseline"]["miou"]["verdict"] == "better" for r in rows):
        lines.append(f"- No arm is clearly better than `{base}` here.")
    baselines = {r["student"]: r for r in summary["table1"] if r.get("fraction", 1.0) == fraction and r["arm"] == base}
    for row in summary["table1"]:  # the joint model as a segmenter: no run of its own to pair with
        if row.get("fraction", 1.0) != fraction or row["student"] != SEGMENTER_STUDENT or not baselines:
            continue
        reference = next(iter(baselines.values()))
        ours, theirs = row["miou"], reference["miou"]
        above = sum(v > max(theirs["values"]) for v in ours["values"] if v is not None)
        lines.append(
            f"- {SEGMENTER_STUDENT} ({row['arm']}): {100 * ours['mean']:.2f} mIoU against {100 * theirs['mean']:.2f} "
            f"for `{base}` ({reference['student']}), not paired (its seed draws only label noise); "
            f"{above} of {len(ours['values'])} of its runs lie above every `{base}` seed."
        )
    return lines + [""]


def _table1_sections(report: Dict[str, Any]) -> List[str]:
    """Table 1 (with the per-seed values) once per real fraction; the title as before for one fraction."""
    summary, fractions = report["summary"], report.get("real_fractions") or {}
    lines: List[str] = []
    several = len(fractions_of(summary)) > 1
    for fraction in fractions_of(summary):
        runs = [r for r in report["runs"] if r.get("fraction", 1.0) == fraction]
        info = fractions.get(f"{fraction:g}", {})
        where = (
            f" ({info.get('num_labelled')} labelled images, {100 * fraction:g} % of the training split)"
            if several or fraction != 1.0
            else ""
        )
        lines += [f"## Table 1{where}: test mIoU and F1, mean ± std over seeds", ""]
        lines += _verdict_lines(summary, fraction)
        lines += [table1_markdown(summary, fraction), ""]
        lines += [_steps_line(runs, report.get("budgets")), ""]
        lines += [f"### Per seed: test mIoU{where}", "", per_seed_markdown(summary, fraction), ""]
    if any(r.get("student") == SEGMENTER_STUDENT for r in report["runs"]):
        lines += [
            f"`{SEGMENTER_STUDENT}`: the arm's joint model reading the label head for each clean test image "
            "(`DAKTerPipeline.segment`, label channels noised to the label timestep from the uniform state), "
            "scored with the students' metrics; its seed draws the label noise. It has no real-only run to pair "
            "with.",
            "",
        ]
    return lines


def _scarcity_lines(report: Dict[str, Any]) -> List[str]:
    """The real fractions: labelled images, their oil share against the full split's, b."""
    fractions = report.get("real_fractions") or {}
    if list(fractions) in ([], ["1"]):
        return []
    lines = [
        "## Label scarcity",
        "",
        "Each fraction below 1 is a seeded subset of the real training split, stratified by whether an image "
        "holds oil, and nested (a smaller fraction's images lie inside a larger one's). The same subset feeds the "
        "fraction's joint model(s), its generated sets (scale x the subset's size) and every student of every arm.",
        "",
        "| fraction | labelled images | with oil | oil share (full split) | b | subset seed |",
        "|---:|---:|---:|---|---:|---:|",
    ]
    for entry in fractions.values():
        share = (
            "-"
            if entry.get("oil_share") is None
            else f"{100 * entry['oil_share']:.1f} % ({100 * entry['full_oil_share']:.1f} %)"
        )
        seed = "-" if entry.get("subset_seed") is None else str(entry["subset_seed"])
        with_oil = "-" if entry.get("num_with_oil") is None else str(entry["num_with_oil"])
        lines.append(
            f"| {100 * entry['fraction']:g} % | {entry['num_labelled']} | {with_oil} | "
            f"{share} | {entry['b']:.4f} | {seed} |"
        )
    return lines + [""]


def render_markdown(report: Dict[str, Any], titles: Dict[str, str]) -> str:
    """The Markdown report, every number taken from `report` (the JSON)."""

    version = _version_text(report["code"])
    step_code = report.get("step_code") or {}
    b = report["balancing_factor"]
    lines: List[str] = [
        f"# Experiment `{report['experiment']}`",
        "",
        report["description"].strip(),
        "",
        f"- Command: `dakter experiment --config {report['config']['path']}`; steps cached in "
        f"`{report['paths']['steps']}`",
        f"- Experiment file: `{report['config']['path']}` (sha256 `{report['config']['sha256'][:16]}`), copied in "
        "full at the end",
        f"- Code: {version} (this report)"
        + (
            ""
            if list(step_code) in ([], [version])
            else "; the cached steps ran with: "
            + "; ".join(f"{v} ({len(steps)} steps)" for v, steps in step_code.items())
        ),
        f"- Data: `{report['data']['source']}`, "
        + ", ".join(f"{split}: {n} images" for split, n in report["data"]["splits"].items()),
        f"- SNR balancing factor b = {b['b']:.4f} on {b['num_images']} training images at "
        f"{b['resolution'] or 'native'} px (the b each joint model used is in its table below)",
        "",
        "## Arms",
        "",
        "| arm | what the student learns from | student loss |",
        "|---|---|---|",
    ]
    for name, arm in report["arms"].items():
        source = (
            "real images" + (", plus a real-only teacher's soft labels" if arm["teacher"] else "")
            if arm["joint_overrides"] is None
            else f"real + generated (joint model {arm['joint_overrides'] or 'as configured'}"
            + (f"; generation {arm['generation_overrides']}" if arm.get("generation_overrides") else "")
            + ")"
        )
        loss = {"real": "CE + Dice", "hard": "CE + Dice on argmax labels", "dakter": "KD on soft labels + CE + Dice"}[
            arm["student_mode"]
        ]
        lines.append(f"| `{name}` ({titles.get(name, name)}) | {source} | {loss} |")
    lines += [""] + _scarcity_lines(report) + _budget_lines(report) + _table1_sections(report)
    lines += [
        "ECE is before temperature scaling. A student trained with `validation_fraction` "
        "(and `eval_strategy: epoch`) also records `temperature_scaling` in its test_metrics.json: "
        "T fitted by NLL on that held-out part of train, never on test, and the test ECE, Brier and NLL "
        "after dividing its logits by T.",
        "",
    ]
    for fraction in fractions_of(report["summary"]):
        where = f" ({100 * fraction:g} % of the labels)" if len(fractions_of(report["summary"])) > 1 else ""
        lines += [
            f"## Table 4{where}: per-class IoU, precision and recall",
            "",
            table4_markdown(report["summary"], fraction),
            "",
        ]
    if report["generated_sets"]:
        lines += [
            "## Joint models and generated sets",
            "",
            "| generated set (arms) | joint steps | b | samples | generation |",
            "|---|---:|---:|---:|---|",
        ]
        for name, entry in report["generated_sets"].items():
            g = entry["generation"]
            lines.append(
                f"| {name} | {entry['joint']['steps']} | {entry['joint']['b']:.4f} | {entry['num_samples']} | "
                f"{g['scheduler'] or 'ddim'}, {g['steps']} steps, soft labels {g.get('soft_label_source', 'final')} |"
            )
        curated = {
            name: entry["curation"] for name, entry in report["generated_sets"].items() if entry.get("curation")
        }
        if curated:
            lines += [
                "",
                "Curated sets (`match_real`), mean oil pixel fraction per image and share of images with oil:",
                "",
            ]
            for name, oil in curated.items():
                before, after, real = oil["candidates"], oil["kept"], oil["real"]
                lines.append(
                    f"- {name}: candidates {before['mean']:.2%} ({before['images_with_oil']:.0%} with oil) -> kept "
                    f"{after['mean']:.2%} ({after['images_with_oil']:.0%}); real training split {real['mean']:.2%} "
                    f"({real['images_with_oil']:.0%})"
                )
        quality = {name: entry["quality"] for name, entry in report["generated_sets"].items()}
        lines += [
            "",
            "## Generation quality (`dakter quality`, real training split vs generated)",
            "",
            format_quality_comparison(quality),
            "",
        ]
        lines += ["### FID and sFID", ""]
        frechet = {name: q.get("frechet") or {} for name, q in quality.items()}
        for name, f in frechet.items():
            if f.get("fid") is not None:
                sfid = "n/a" if f.get("sfid") is None else f"{f['sfid']:.2f}"
                lines.append(
                    f"- {name}: FID {f['fid']:.2f}, sFID {sfid} ({f.get('num_real')} real, {f.get('num_generated')} "
                    "generated images)"
                )
                lines += [f"  - {note}" for note in f.get("notes", [])]
        missing = [name for name, f in frechet.items() if f.get("fid") is None]
        if missing:
            lines += [
                f"Not computed for {', '.join(missing)}: no local Inception weights (set `quality: "
                f"{{inception_weights: PATH}}` in the experiment file).",
                "",
            ]
            lines += ["```text", frechet[missing[0]].get("note", "").strip(), "```"]
        lines.append("")
        lines += soft_label_section(quality)
    captions = {
        "real_vs_generated": "Real training pairs beside generated ones (image | mask), like the paper's Fig. 7"
        if report.get("show_real_images", True)
        else "Generated pairs (image | mask), like the paper's Fig. 7; real images left out (show_real_images: false)",
        "soft_labels": "Generated images with their soft labels: P(oil) and the argmax mask, like Fig. 2",
        "joint_loss": "Joint model training loss",
        "student_loss": "Student training loss (first seed)",
    }
    for name in report["figures"]:
        if name.startswith("labels_"):
            captions[name] = (
                f"Test mIoU against the number of labelled images, {name[len('labels_') :]}: one line per arm "
                "(mean over seeds), the band spans the seeds, each dot is one seed"
            )
    if report["figures"]:
        lines += ["## Figures", ""]
        for name, file in report["figures"].items():
            caption = captions.get(
                name,
                f"mIoU against augmentation scale, {name[len('scale_') :]} (like Fig. 5)"
                if name.startswith("scale_")
                else name,
            )
            if name.startswith("reliability_"):
                caption = (
                    f"Reliability diagram, {name[len('reliability_') :]}: test-pixel accuracy against "
                    "confidence, pooled over seeds"
                )
            lines += [f"**{caption}**", "", f"![{caption}]({file})", ""]
    seconds: Dict[str, float] = {}
    for timing in report["timings"]:
        seconds[timing["kind"]] = seconds.get(timing["kind"], 0.0) + timing["seconds"]
    lines += [
        "## Time",
        "",
        "Wall time of each kind of step when it ran (cached steps keep the time of their first run): "
        + ", ".join(f"{kind} {value / 60:.1f} min" for kind, value in seconds.items())
        + f"; total {sum(seconds.values()) / 60:.1f} min.",
        "",
    ]
    lines += ["## Experiment file", "", "```yaml", report["config"]["text"].rstrip(), "```", ""]
    return "\n".join(lines)


def soft_label_section(quality: Dict[str, Dict[str, Any]]) -> List[str]:
    """The section "What the soft labels carry": each generated set's soft-label statistics and per-image class
    fractions, from its quality step's `soft_labels` and `class_fractions` (dakter_hf.evaluation.soft_labels)."""
    lines = ["## What the soft labels carry", ""]
    tables = format_soft_label_tables(quality)
    old = [name for name, q in quality.items() if "class_fractions" not in q]
    if tables:
        lines += [
            "Entropy and top-class probability of softmax(logits / T) per generated pixel (T = 1, and the KD "
            "temperature), where the entropy sits (a band around the argmax mask's class boundaries against the "
            "interiors), and the per-image class fractions of the generated masks against the real training masks.",
            "",
            tables,
            "",
        ]
    if old:
        lines += [
            f"Not measured for {', '.join(old)}: its cached quality step predates the soft-label statistics "
            "(a new output folder, or removing that quality step's folder, recomputes it).",
            "",
        ]
    return lines
