"""`dakter experiment`: the label-scarcity axis (real_fractions), the student budget, arms' generation
settings and the joint model as a segmenter."""

import json
import os

import numpy as np
import pytest
import torch
from experiment_helpers import tiny_config

from dakter_hf.cli import main
from dakter_hf.experiment.config import load_experiment_config
from dakter_hf.experiment.runner import ExperimentRunner
from dakter_hf.experiment.segmenter import evaluate_segmenter
from dakter_hf.experiment.steps import run_step
from dakter_hf.experiment.subsets import scarcity_subset, subset_summary
from dakter_hf.experiment.tables import parse_markdown_table


# ------------------------------------------------------------------ the subset rule


def flags(count=200, oil=70, seed=3):
    has_oil = np.zeros(count, dtype=bool)
    has_oil[np.random.default_rng(seed).choice(count, oil, replace=False)] = True
    return has_oil.tolist()


def test_subsets_are_seeded():
    has_oil = flags()
    assert scarcity_subset(has_oil, 0.1, seed=0) == scarcity_subset(has_oil, 0.1, seed=0)
    assert scarcity_subset(has_oil, 0.1, seed=0) != scarcity_subset(has_oil, 0.1, seed=1)


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("count, oil", [(200, 70), (37, 5), (1000, 999), (50, 0)])
def test_subsets_are_stratified_by_oil_within_one_image(fraction, count, oil):
    has_oil = flags(count, oil)
    indices = scarcity_subset(has_oil, fraction, seed=2)
    summary = subset_summary(has_oil, indices)
    assert len(set(indices)) == len(indices) == max(1, round(fraction * count)) and indices == sorted(indices)
    # the subset's count of oil images is within one image of the full split's share
    assert abs(summary["num_with_oil"] - summary["full_oil_share"] * len(indices)) <= 1
    assert abs(summary["oil_share"] - summary["full_oil_share"]) <= 1 / len(indices)


def test_subsets_are_nested_over_fractions_of_one_seed():
    has_oil = flags()
    small, middle, full = (set(scarcity_subset(has_oil, f, seed=5)) for f in (0.1, 0.25, 1.0))
    assert small < middle < full and full == set(range(200))


def test_a_fraction_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        scarcity_subset(flags(), 1.5, seed=0)


# ------------------------------------------------------------------ the plan


def plan_of(tmp_path, **changes):
    runner = ExperimentRunner(load_experiment_config(tiny_config(tmp_path, **changes)))
    return runner, runner.plan


def test_default_fraction_keeps_the_step_keys_of_an_experiment_without_it(tmp_path):
    _, before = plan_of(tmp_path, arms=("real", "dakter-kd", "teacher-kd"), teacher={"student": "segformer-b0"})
    _, after = plan_of(
        tmp_path,
        name="again.yaml",
        arms=("real", "dakter-kd", "teacher-kd"),
        teacher={"student": "segformer-b0"},
        real_fractions=[1.0],
        budget="equal_steps",
    )
    assert [(s.kind, s.key) for s in before.steps] == [(s.kind, s.key) for s in after.steps]
    assert "subset" not in {s.kind for s in before.steps}


def test_one_subset_step_per_fraction_is_the_data_of_every_step_of_that_fraction(tmp_path):
    runner, plan = plan_of(
        tmp_path,
        arms=("real", "dakter-no-kd", "dakter-kd", "teacher-kd"),
        teacher={"student": "segformer-b0"},
        real_fractions=[0.25, 1.0, 0.5],
        joint_segmenter=True,
        joint_changes={"independent_label_timestep": 0.5},
    )
    subsets = [s for s in plan.steps if s.kind == "subset"]
    assert sorted(s.settings["fraction"] for s in subsets) == [0.25, 0.5]
    assert all(s.inputs == {"data": plan.data.key} and s.settings["seed"] == 0 for s in subsets)
    assert plan.data_of_fraction[1.0] is plan.data
    fraction_of_data = {step.key: fraction for fraction, step in plan.data_of_fraction.items()}
    for step in plan.steps:
        if step.kind not in ("data", "subset"):
            assert step.inputs["data"] in fraction_of_data  # every step reads one fraction's data
    for run in plan.runs:  # every student of every arm reads its fraction's subset
        step = run["step"]
        assert fraction_of_data[step.inputs["data"]] == run["fraction"]
        if "generated" in step.inputs:
            generated = plan.generated_of_arm[(run["arm"], run["fraction"])]
            assert step.inputs["generated"] == generated.key and generated.inputs["data"] == step.inputs["data"]
            joint = plan.joint_of_arm[(run["arm"], run["fraction"])]
            assert generated.inputs["joint"] == joint.key and joint.inputs["data"] == step.inputs["data"]
        if "teacher" in step.inputs:
            assert step.inputs["teacher"] == plan.teacher_of_fraction[run["fraction"]].key
    # arms of one fraction share its joint model; each fraction trains its own
    joints = {(arm, f): s.key for (arm, f), s in plan.joint_of_arm.items()}
    assert joints[("dakter-kd", 0.25)] == joints[("dakter-no-kd", 0.25)] != joints[("dakter-kd", 1.0)]
    assert [s.kind for s in plan.steps].count("joint") == 3
    # one segmenter per joint model and seed, reading the fraction's data
    assert len(plan.segmenter_runs) == 3 * 2
    assert all(fraction_of_data[r["step"].inputs["data"]] == r["fraction"] for r in plan.segmenter_runs)


def test_another_subset_seed_changes_the_subset_steps_and_everything_below_them(tmp_path):
    _, first = plan_of(tmp_path, real_fractions=[0.5, 1.0])
    _, second = plan_of(tmp_path, name="seed1.yaml", real_fractions=[0.5, 1.0], subset_seed=1)
    keys = {(s.kind, s.key) for s in first.steps}
    changed = [s for s in second.steps if (s.kind, s.key) not in keys]
    assert {s.kind for s in changed} >= {"subset", "joint", "generate", "student", "balance"}
    assert all(s.kind != "data" for s in changed)


def test_arms_may_override_generation_settings_and_share_the_joint_step(tmp_path):
    _, plan = plan_of(
        tmp_path,
        arms=[
            "real",
            "dakter-kd",
            {"name": "kd-posterior", "mode": "dakter", "generation": {"soft_label_source": "posterior"}},
        ],
        joint_changes={"independent_label_timestep": 0.5},
    )
    joint = plan.joint_of_arm
    assert joint[("kd-posterior", 1.0)] is joint[("dakter-kd", 1.0)]
    final, posterior = plan.generated_of_arm[("dakter-kd", 1.0)], plan.generated_of_arm[("kd-posterior", 1.0)]
    assert final.key != posterior.key and posterior.settings["soft_label_source"] == "posterior"
    assert "soft_label_source" not in final.settings  # the default stays out of the key: old caches stay valid


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"real_fractions": [0.1, 1.5]}, "real_fractions must be"),
        ({"real_fractions": [0.5, 0.5]}, "real_fractions must be"),
        ({"budget": "equal_time"}, "budget must be one of"),
        ({"arms": ["real", {"name": "x", "mode": "dakter", "budget": "lots"}]}, "arms[1].budget"),
        ({"arms": ["real", {"name": "x", "mode": "dakter", "generation": {"stpes": 2}}]}, "unknown key(s) ['stpes']"),
        ({"joint_segmenter": {"label_timestep": -1}}, "joint_segmenter.label_timestep"),
        ({"joint_segmenter": True}, "set joint.independent_label_timestep"),
        (
            {"arms": ["real", {"name": "p", "mode": "dakter", "generation": {"soft_label_source": "posterior"}}]},
            "never saw",
        ),
        (
            {"arms": ["real", {"name": "x", "mode": "hard", "joint": {"label_loss": "l2"}, "segmenter": True}]},
            "a segmenter needs a joint model with label_loss ce",
        ),
    ],
)
def test_bad_scarcity_budget_and_segmenter_settings_are_refused(tmp_path, changes, message, capsys):
    path = tiny_config(tmp_path, **changes)
    assert main(["experiment", "--config", path]) == 2
    err = capsys.readouterr().err
    assert message in err and path in err and not (tmp_path / "run").exists()


# ------------------------------------------------------------------ the budget


def test_both_budgets_give_the_planned_step_counts(tmp_path):
    arms = ["real", "dakter-kd", {"name": "kd-epochs", "mode": "dakter", "budget": "equal_epochs"}]
    runner, plan = plan_of(tmp_path, arms=arms, scales=[0.5, 1.0], real_fractions=[0.5, 1.0])
    for step in plan.steps:
        if step.kind in ("data", "subset"):
            runner.results[step.key] = run_step(step, runner.root)
    assert runner.num_labelled(0.5) == 6 and runner.num_labelled(1.0) == 12
    steps = {(r["arm"], r["scale"], r["fraction"]): runner.planned_steps(r["step"]) for r in plan.runs}
    budgets = {r["arm"]: r["budget"] for r in plan.runs}
    assert budgets == {"real": "equal_steps", "dakter-kd": "equal_steps", "kd-epochs": "equal_epochs"}
    max_steps = 2
    for fraction, n_real in ((0.5, 6), (1.0, 12)):
        assert steps[("real", None, fraction)] == max_steps
        for scale in (0.5, 1.0):
            assert steps[("dakter-kd", scale, fraction)] == max_steps  # equal steps: max_steps, whatever the data
            n_generated = round(scale * n_real)
            expected = round(max_steps * (n_real + n_generated) / n_real)
            assert steps[("kd-epochs", scale, fraction)] == expected
    assert steps[("kd-epochs", 1.0, 1.0)] == 4 and steps[("kd-epochs", 0.5, 1.0)] == 3
    # a validation part is left out of n_real, as train_student splits it off (ceil(0.25 x 12) = 3 held out)
    student = {**runner.config.students[0], "validation_fraction": 0.25, "eval_strategy": "epoch"}
    runner2, plan2 = plan_of(tmp_path, name="val.yaml", arms=arms, students=[student])
    for step in plan2.steps:
        if step.kind == "data":
            runner2.results[step.key] = run_step(step, runner2.root)
    epochs = next(r["step"] for r in plan2.runs if r["arm"] == "kd-epochs")
    assert runner2.planned_steps(epochs) == round(2 * (9 + 9) / 9)


# ------------------------------------------------------------------ the segmenter on a stand-in pipeline


class StandInPipeline:
    """`segment` returns logits that put class 1 where the image is bright: a perfect segmenter of the
    simulated scenes would agree with their masks; here it only has to be scored like a student."""

    num_classes = 2

    class unet:
        class config:
            sample_size = 32

    def __init__(self):
        self.calls = []

    def segment(self, images, label_timestep=None, generator=None):
        self.calls.append((tuple(images.shape), label_timestep, generator))
        assert images.min() >= -1 and images.max() <= 1
        bright = (images > 0).float()
        return torch.cat([1 - bright, bright], dim=1) * 4.0


def test_the_segmenter_is_scored_with_the_students_metrics():
    from dakter_hf.data.simulate import simulate_sar
    from dakter_hf.students.metrics import SegmentationMetricAccumulator

    test = simulate_sar(4, num_classes=2, size=32, seed=0, num_test_samples=3)["test"]
    pipe = StandInPipeline()
    result = evaluate_segmenter(pipe, test, label_timestep=200, seed=1, batch_size=2)
    assert [c[0] for c in pipe.calls] == [(2, 1, 32, 32), (1, 1, 32, 32)] and pipe.calls[0][1] == 200
    # the same numbers by hand: the accumulator on the same predictions
    accumulator = SegmentationMetricAccumulator(2, id2label={0: "background", 1: "oil"})
    for row in test:
        image = torch.from_numpy(np.asarray(row["image"].convert("L"), dtype=np.float32) / 127.5 - 1)[None, None]
        probabilities = pipe.segment(image).softmax(1)
        labels = torch.from_numpy(np.asarray(row["mask"], dtype=np.int64))[None]
        accumulator.update(probabilities.argmax(1), labels, probabilities=probabilities)
    expected = accumulator.compute()
    assert result["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-6)
    assert result["ece"] == pytest.approx(expected["ece"], abs=1e-6) and result["num_images"] == 3


# ------------------------------------------------------------------ one tiny run of it all


@pytest.fixture(scope="module")
def scarce(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("scarce")
    arms = ["real", {"name": "kd-epochs", "mode": "dakter", "budget": "equal_epochs", "segmenter": True}]
    path = tiny_config(
        tmp_path, arms=arms, seeds=[0, 1], real_fractions=[0.5, 1.0], joint_changes={"independent_label_timestep": 0.5}
    )
    assert main(["experiment", "--config", path]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    return tmp_path, report, (tmp_path / "report" / "report.md").read_text()


def test_a_run_trains_the_promised_steps_on_its_fractions_subset(scarce):
    tmp_path, report, markdown = scarce
    students = [r for r in report["runs"] if r["student"] == "segformer-b0"]
    assert {(r["arm"], r["fraction"], r["seed"]) for r in students} == {
        (arm, f, s) for arm in ("real", "kd-epochs") for f in (0.5, 1.0) for s in (0, 1)
    }
    for run in students:
        with open(tmp_path / "run" / run["step"] / "work" / "trainer_state.json") as handle:
            global_step = json.load(handle)["global_step"]
        n_real = {0.5: 6, 1.0: 12}[run["fraction"]]
        expected = 2 if run["arm"] == "real" else round(2 * (n_real + n_real) / n_real)
        assert global_step == run["steps"] == run["planned_steps"] == expected
        assert run["num_labelled"] == n_real
    assert "Student budget:" in markdown and "kd-epochs equal epochs" in markdown
    assert "kd-epochs 4 (equal epochs)" in markdown
    # the generated set of the half fraction holds scale x the subset's images
    half = next(v for v in report["generated_sets"].values() if v["fraction"] == 0.5)
    assert half["num_samples"] == 6
    assert report["real_fractions"]["0.5"]["num_labelled"] == 6


def test_the_report_has_a_table_per_fraction_the_segmenter_row_and_the_labels_figure(scarce):
    tmp_path, report, markdown = scarce
    assert "## Label scarcity" in markdown
    for fraction, count in (("50", 6), ("100", 12)):
        section = markdown.split(f"## Table 1 ({count} labelled images, {fraction} % of the training split)")[1]
        rows = parse_markdown_table(section)
        arms = {(r["Student"], r["Arm"]) for r in rows}
        segmenter = ("joint model (segmenter)", "kd-epochs")
        assert arms == {("segformer-b0", "real"), ("segformer-b0", "kd-epochs"), segmenter}
        assert rows[0]["Arm"] == "real" and rows[-1]["Student"] == "joint model (segmenter)"  # segmenter last
        kd = next(r for r in rows if r["Arm"] == "kd-epochs" and r["Student"] == "segformer-b0")
        assert kd["seeds above real (mIoU)"].endswith("/2") and kd["median mIoU (%)"] != "n/a"
        per_seed = parse_markdown_table(section.split("### Per seed")[1])
        assert {"seed 0", "seed 1", "median", "mean ± std"} <= set(per_seed[0])
    figure = report["figures"]["labels_segformer-b0"]
    assert os.path.getsize(tmp_path / "report" / figure) > 1000 and f"]({figure})" in markdown
    segmenter = [r for r in report["runs"] if r["student"] == "joint model (segmenter)"]
    assert len(segmenter) == 4 and all(0 <= r["metrics"]["mean_iou"] <= 1 for r in segmenter)


def test_labelled_points_give_each_arms_seed_values_by_labelled_images():
    from dakter_hf.experiment.tables import labelled_points, summarize

    def run(arm, seed, fraction, value, scale=None):
        count = int(100 * fraction)
        return {"arm": arm, "student": "s", "scale": scale, "seed": seed, "fraction": fraction,
                "num_labelled": count, "metrics": {"mean_iou": value, "mean_f1": value}}  # fmt: skip

    runs = [run("real", s, f, 0.5 + f / 10 + s / 100) for s in (0, 1) for f in (0.1, 1.0)]
    runs += [run("kd", s, f, 0.6 + s / 100, scale=x) for s in (0, 1) for f in (0.1, 1.0) for x in (0.5, 1.0)]
    summary = summarize(runs)
    points = labelled_points(summary, "s")
    assert points["real"] == [(10, [0.51, pytest.approx(0.52)]), (100, [0.6, pytest.approx(0.61)])]
    assert [count for count, _ in points["kd"]] == [10, 100]
    assert [r["fraction"] for r in summary["table1"]] == [0.1] * 3 + [1.0] * 3
    kd = next(r for r in summary["table1"] if r["arm"] == "kd")
    assert kd["vs_baseline"]["miou"]["n_above"] == 2 and kd["miou"]["median"] == pytest.approx(0.605)


def test_a_curated_arm_matches_its_own_fractions_training_split(tmp_path):
    """`generation: {match_real: true}`: the set is curated against the subset the arm's students learn from."""
    arms = [
        "real",
        "dakter-kd",
        {"name": "curated", "mode": "dakter", "generation": {"match_real": True, "over_generate": 2}},
    ]
    path = tiny_config(tmp_path, arms=arms, seeds=[0], real_fractions=[0.5])
    config = load_experiment_config(path)
    runner = ExperimentRunner(config)
    plain, curated = (runner.plan.generated_of_arm[(arm, 0.5)] for arm in ("dakter-kd", "curated"))
    assert "match_real" not in plain.settings and curated.settings["match_real"] is True
    assert plain.key != curated.key and plain.inputs == curated.inputs
    runner.run()
    result = runner.result(curated)
    record = result["curation"]
    subset = runner.result(runner.plan.data_of_fraction[0.5])["splits"]["train"]
    assert result["num_samples"] == subset  # scale 1 of the subset: N kept of 2 N candidates
    assert record["num_candidates"] == 2 * subset and len(record["kept_indices"]) == subset
    assert "curation" not in runner.result(plain)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "- curated: candidates " in report and "-> kept" in report
    for bad in ({"match_real": "yes"}, {"match_real": True, "over_generate": 0.5}):
        bad_path = tiny_config(
            tmp_path, name="bad.yaml", arms=["real", {"name": "c", "mode": "dakter", "generation": bad}]
        )
        with pytest.raises(ValueError, match="match_real|over_generate"):
            load_experiment_config(bad_path)


def test_an_arm_may_override_student_settings(tmp_path):
    """`student: {kd_weight: ...}` on an arm: its students get it, others keep theirs; bad values are refused."""
    arms = ["real", "dakter-kd", {"name": "kd-strong", "mode": "dakter", "student": {"kd_weight": 0.5}}]
    path = tiny_config(tmp_path, arms=arms)
    runner = ExperimentRunner(load_experiment_config(path))
    steps = {(run["arm"], run["seed"]): run["step"] for run in runner.plan.runs}
    assert steps[("kd-strong", 0)].settings["kd_weight"] == 0.5
    assert "kd_weight" not in steps[("dakter-kd", 0)].settings and "kd_weight" not in steps[("real", 0)].settings
    assert steps[("kd-strong", 0)].inputs == steps[("dakter-kd", 0)].inputs  # same generated set, other loss
    assert steps[("kd-strong", 0)].key != steps[("dakter-kd", 0)].key
    for student, message in (
        ({"kd_weight": -1}, "kd_weight"),
        ({"output_dir": "x"}, "set by the experiment"),
        ({"student": "segformer-b1"}, "may not change the student model"),
    ):
        bad = tiny_config(
            tmp_path, name="bad.yaml", arms=["real", {"name": "k", "mode": "dakter", "student": student}]
        )
        with pytest.raises(ValueError, match=message):
            load_experiment_config(bad)


def test_the_baseline_may_be_another_real_only_arm(tmp_path):
    """`baseline: real-long`: every arm is paired against a real-only arm trained as long as the others."""
    arms = ["real", {"name": "real-long", "mode": "real", "student": {"max_steps": 4}}, "dakter-kd"]
    config = load_experiment_config(tiny_config(tmp_path, arms=arms, baseline="real-long", seeds=[0, 1]))
    assert config.baseline == "real-long"
    report = ExperimentRunner(config).run()
    summary = report["summary"]
    assert summary["baseline_arm"] == "real-long"
    rows = {row["arm"]: row for row in summary["table1"]}
    assert rows["real-long"]["vs_baseline"] is None and rows["real"]["vs_baseline"] is not None
    diffs = [a - b for a, b in zip(rows["dakter-kd"]["miou"]["values"], rows["real-long"]["miou"]["values"])]
    assert rows["dakter-kd"]["vs_baseline"]["miou"]["mean_diff"] == pytest.approx(sum(diffs) / len(diffs))
    assert "against `real-long` of the same seeds" in (tmp_path / "report" / "report.md").read_text()
    for bad in ("dakter-kd", "nobody"):
        with pytest.raises(ValueError, match="baseline must name a real-only arm"):
            load_experiment_config(tiny_config(tmp_path, name="bad.yaml", arms=arms, baseline=bad))
