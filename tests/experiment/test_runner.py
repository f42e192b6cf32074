"""`dakter experiment`: the whole chain on a tiny config, its cache, resumption and the report."""

import json
import os
import shutil

import pytest
from experiment_helpers import TINY_STUDENT, tiny_config

from dakter_hf.cli import main
from dakter_hf.experiment.config import load_experiment_config
from dakter_hf.experiment.runner import ExperimentRunner
from dakter_hf.experiment.tables import parse_markdown_table


class Killed(Exception):
    """Stands for the process being killed (not an error the runner handles)."""


class Calls:
    """Counts the joint trainings and student trainings the runner starts (and can stop one)."""

    def __init__(self, monkeypatch, interrupt_student_after=None):
        import dakter_hf.experiment.runner as runner_module  # the runner calls the trainers by these names

        self.joint, self.students = 0, 0
        real_train, real_student = runner_module.train, runner_module.train_student

        def train(args):
            self.joint += 1
            return real_train(args)

        def train_student(args, training):
            self.students += 1
            folder = real_student(args, training)
            if interrupt_student_after is not None and self.students >= interrupt_student_after:
                raise Killed("killed after the student was saved, before its step was recorded")
            return folder

        monkeypatch.setattr(runner_module, "train", train)
        monkeypatch.setattr(runner_module, "train_student", train_student)


def read_report(folder):
    """The report of the experiment in `folder`: (report.json as a dict, report.md as text)."""
    report = json.loads((folder / "report" / "report.json").read_text())
    return report, (folder / "report" / "report.md").read_text()


def student_values(folder, report, arm, key):
    """`key` of each of `arm`'s runs, read from what the student's own test pass wrote."""
    values = []
    for run in report["runs"]:
        if run["arm"] == arm:
            with open(folder / "run" / run["step"] / "work" / "test_metrics.json") as handle:
                values.append(json.load(handle)[key])
    return values


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One complete tiny experiment (real + DAKTer-KD, 2 seeds), shared by the tests that only read it."""
    tmp_path = tmp_path_factory.mktemp("experiment")
    path = tiny_config(tmp_path)
    assert main(["experiment", "--config", path]) == 0
    return tmp_path, path


def test_end_to_end_report_has_tables_figures_and_names_the_config(finished):
    tmp_path, path = finished
    report, markdown = read_report(tmp_path)
    assert {(r["arm"], r["seed"]) for r in report["runs"]} == {
        ("real", 0),
        ("real", 1),
        ("dakter-kd", 0),
        ("dakter-kd", 1),
    }
    for name in ("real_vs_generated", "soft_labels", "joint_loss", "student_loss"):
        assert os.path.getsize(tmp_path / "report" / report["figures"][name]) > 1000
        assert f"]({report['figures'][name]})" in markdown
    assert report["config"]["text"] == open(path).read() and report["config"]["sha256"][:16] in markdown
    assert report["code"]["package_version"] in markdown
    assert "Table 1" in markdown and "Table 4" in markdown and "oil pixel fraction" in markdown
    # FID needs local Inception weights: without them the report says how to get them
    frechet = next(iter(report["generated_sets"].values()))["quality"]["frechet"]
    assert frechet["fid"] is not None or "Inception" in frechet["note"]


def test_report_tables_agree_with_the_json_and_the_student_results(finished):
    tmp_path, _ = finished
    report, markdown = read_report(tmp_path)
    table1 = parse_markdown_table(markdown.split("## Table 1")[1])
    rows = {row["Arm"]: row for row in table1}
    for entry in report["summary"]["table1"]:
        values = student_values(tmp_path, report, entry["arm"], "mean_iou")
        assert entry["miou"]["values"] == pytest.approx(values)
        mean = sum(values) / len(values)
        assert rows[entry["arm"]]["mIoU (%)"].split(" ± ")[0] == f"{100 * mean:.2f}"
    assert rows["dakter-kd"]["Verdict (mIoU)"] in ("better", "worse", "no clear difference")
    # the answer in words before the table agrees with it
    short = markdown.split("In short")[1].split("| Student")[0]
    line = next(x for x in short.splitlines() if ", dakter-kd x" in x)
    assert f"**{rows['dakter-kd']['Verdict (mIoU)']}**" in line
    comparison = next(e for e in report["summary"]["table1"] if e["arm"] == "dakter-kd")["vs_baseline"]["miou"]
    assert f"on {comparison['n_above']} of {comparison['n_pairs']} seeds" in line
    assert f"{100 * comparison['mean_diff']:+.2f} points" in line  # points, as in the table
    assert f"{100 * comparison['mean_diff']:+.2f} [" in rows["dakter-kd"]["Δ mIoU vs real (95 % CI)"]


def test_second_run_trains_nothing_and_an_added_arm_trains_only_itself(finished, tmp_path, monkeypatch):
    source, _ = finished
    shutil.copytree(source / "run", tmp_path / "run")
    calls = Calls(monkeypatch)
    assert main(["experiment", "--config", tiny_config(tmp_path)]) == 0
    assert (calls.joint, calls.students) == (0, 0)
    # DAKTer without KD shares the joint model and the generated set: only its students train
    assert (
        main(
            ["experiment", "--config", tiny_config(tmp_path, "more.yaml", arms=("real", "dakter-kd", "dakter-no-kd"))]
        )
        == 0
    )
    assert (calls.joint, calls.students) == (0, 2)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert {r["arm"] for r in report["runs"]} == {"real", "dakter-kd", "dakter-no-kd"}


def test_interrupted_run_resumes_without_redoing_finished_work(tmp_path, monkeypatch):
    path = tiny_config(tmp_path, arms=("real",))
    calls = Calls(monkeypatch, interrupt_student_after=1)
    with pytest.raises(Killed):
        main(["experiment", "--config", path])
    first = next((tmp_path / "run" / "student").glob("*-s0-*"))
    assert not (first / "done.json").exists() and (first / "work" / "model.safetensors").exists()
    saved = os.path.getmtime(first / "work" / "model.safetensors")
    assert not (tmp_path / "run" / ".dakter.lock").exists()  # the lock went with the process
    monkeypatch.undo()
    calls = Calls(monkeypatch)
    assert main(["experiment", "--config", path]) == 0
    # the cut step is entered again; its student was finished, so train_student only confirms it
    assert calls.students == 2 and os.path.getmtime(first / "work" / "model.safetensors") == saved
    assert (first / "done.json").exists() and (tmp_path / "report" / "report.md").exists()


def test_a_student_step_holding_a_broken_checkpoint_reruns(tmp_path, monkeypatch):
    """A student killed while writing its checkpoint in place (as older versions did) leaves a checkpoint no
    resume can read; the experiment skips it (warned) and trains the step again instead of failing forever."""
    path = tiny_config(tmp_path, arms=("real",), seeds=[0])
    assert main(["experiment", "--config", path]) == 0
    step = next((tmp_path / "run" / "student").glob("*-s0-*"))
    work = step / "work"
    (step / "done.json").unlink()
    for name in ("model.safetensors", "test_metrics.json", "README.md"):
        (work / name).unlink()
    marker = json.loads((work / ".dakter.json").read_text())
    (work / ".dakter.json").write_text(json.dumps({**marker, "finished": False}))
    (work / "checkpoint-2" / "trainer_state.json").unlink()
    with open(work / "checkpoint-2" / "model.safetensors", "r+b") as handle:
        handle.truncate(64)
    calls = Calls(monkeypatch)
    assert main(["experiment", "--config", path]) == 0
    assert calls.students == 1 and (step / "done.json").exists() and (work / "model.safetensors").exists()
    assert (work / "checkpoint-2" / "trainer_state.json").exists()  # saved again, whole


def test_plan_shares_steps_between_arms(tmp_path):
    config = load_experiment_config(
        tiny_config(tmp_path, arms=("real", "dakter-no-kd", "dakter-kd", "b-snr", "ddpm-l2"))
    )
    plan = ExperimentRunner(config).plan
    kinds = [step.kind for step in plan.steps]
    assert kinds.count("joint") == 2 and kinds.count("generate") == 2  # CE joint model shared by 3 arms, L2 its own
    by_arm = {(r["arm"], r["seed"]): r["step"] for r in plan.runs}
    assert by_arm[("b-snr", 0)] is by_arm[("dakter-kd", 0)]  # same settings, same step
    assert by_arm[("dakter-no-kd", 0)] is not by_arm[("dakter-kd", 0)]


def test_keys_change_with_the_source_files_and_with_inception_weights(tmp_path, monkeypatch):
    source = tmp_path / "scenes"
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    (source / "images" / "a.png").write_bytes(b"1")  # only names, sizes and times are read to plan
    path = tiny_config(tmp_path, data={"source": f"folder:{source}", "classes": "background,oil"})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache: no Inception weights

    def keys():
        return {step.kind + step.label: step.key for step in ExperimentRunner(load_experiment_config(path)).plan.steps}

    before = keys()
    (source / "images" / "a.png").write_bytes(b"22")
    changed = keys()
    assert all(changed[name] != before[name] for name in before)  # every step reads the data, directly or not
    weights = tmp_path / "torch" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"w")
    with_weights = keys()
    assert {name for name in changed if with_weights[name] != changed[name]} == {
        name for name in changed if name.startswith("quality")
    }


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"arms": ["real", "nonsense"]}, "unknown arm 'nonsense'"),
        ({"joint": {"resolution": 32, "output_dir": "x"}}, "set by the experiment runner"),
        ({"joint": {"resolutoin": 32}}, "unknown argument(s) ['resolutoin']"),
        ({"students": [{"student": "segformer-b9"}]}, "--student must be one of"),
        ({"seeds": [0, 0]}, "distinct integers"),
        ({"data": {"sensor": "palsar"}}, "`data` must give at least `source`"),
        ({"generation": {"stpes": 3}}, "generation: unknown key(s) ['stpes']"),
        ({"generation": {"scheduler": "dpmpp"}}, "generation.scheduler"),
        ({"scales": [1, "x"]}, "scales must be a non-empty list of numbers > 0"),
        (
            {"arms": ["real", {"name": "mine", "mode": "dakter", "joint": {"output_dir": "/x"}}]},
            "arms[1].joint: ['output_dir'] are set by the experiment runner",
        ),
    ],
)
def test_bad_experiment_files_are_refused_before_anything_is_written(tmp_path, changes, message, capsys):
    path = tiny_config(tmp_path, **changes)
    assert main(["experiment", "--config", path]) == 2
    err = capsys.readouterr().err
    assert message in err and path in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "report").exists()


def test_output_folder_of_another_command_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("mine")
    assert main(["experiment", "--config", tiny_config(tmp_path, arms=("real",))]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "run" / "precious.txt").read_text() == "mine"


def test_overwrite_empties_only_an_experiment_folder_and_report_folders_are_checked_first(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("mine")
    assert main(["experiment", "--config", tiny_config(tmp_path, arms=("real",)), "--overwrite"]) == 2
    assert "was not written by `dakter experiment`" in capsys.readouterr().err
    assert (tmp_path / "run" / "precious.txt").read_text() == "mine"
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "notes.md").write_text("mine")
    assert (
        main(
            [
                "experiment",
                "--config",
                tiny_config(tmp_path, arms=("real",)),
                "--out",
                str(tmp_path / "other"),
                "--report-dir",
                str(tmp_path / "report"),
            ]
        )
        == 2
    )
    assert "report_dir" in capsys.readouterr().err and not (tmp_path / "other").exists()
    assert (tmp_path / "report" / "notes.md").read_text() == "mine"


def test_out_without_report_dir_reports_beside_the_run(tmp_path):
    config = load_experiment_config(tiny_config(tmp_path), output_dir=str(tmp_path / "trial"))
    assert config.report_dir == str(tmp_path / "trial" / "report")  # not the file's report_dir


def test_dry_run_lists_the_plan_and_writes_nothing(tmp_path, capsys):
    assert main(["experiment", "--config", tiny_config(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "joint" in out and "to run" in out and "student" in out
    assert not (tmp_path / "run").exists()


def test_report_markdown_shows_frechet_distances_when_computed_and_how_to_get_weights_otherwise(finished):
    from dakter_hf.experiment.report import render_markdown

    tmp_path, _ = finished
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    name = next(iter(report["generated_sets"]))
    frechet = report["generated_sets"][name]["quality"]["frechet"]
    frechet.update(fid=None, note="InceptionV3 FID weights not found at /x; get the file once with: curl ...")
    text = render_markdown(report, {})
    assert f"Not computed for {name}" in text and "curl" in text
    frechet.update(fid=12.345, sfid=6.789, num_real=12, num_generated=12, notes=["FID is biased at small N"])
    text = render_markdown(report, {})
    assert f"- {name}: FID 12.35, sFID 6.79 (12 real, 12 generated images)" in text and "Not computed" not in text
    assert "Optimizer steps per student (over seeds): real 2 (equal steps), dakter-kd 2 (equal steps)." in text


def test_scales_satsynth_and_teacher_arms_reuse_the_cache_and_plot_against_scale(finished, tmp_path, monkeypatch):
    source, _ = finished
    shutil.copytree(source / "run", tmp_path / "run")
    calls = Calls(monkeypatch)
    path = tiny_config(
        tmp_path,
        arms=("real", "dakter-kd", "satsynth", "teacher-kd"),
        scales=[0.5, 1.0],
        teacher={
            "student": "segformer-b0",
            "resolution": 32,
            "student_config": TINY_STUDENT,
            "per_device_train_batch_size": 4,
            "max_steps": 2,
        },
    )
    assert main(["experiment", "--config", path]) == 0
    # one new joint model (SatSynth);
    # students: dakter-kd at 0.5, SatSynth at 0.5 and 1, the teacher, the teacher-KD students
    assert (calls.joint, calls.students) == (1, 2 + 4 + 1 + 2)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert os.path.getsize(tmp_path / "report" / report["figures"]["scale_segformer-b0"]) > 1000
    assert {(r["arm"], r["scale"]) for r in report["summary"]["table1"]} >= {
        ("satsynth", 0.5),
        ("satsynth", 1.0),
        ("dakter-kd", 0.5),
        ("teacher-kd", None),
    }


def test_a_step_callback_receives_its_step_and_work_folder(tmp_path):
    from dakter_hf.experiment.steps import Step, run_step

    seen = []

    def callback(step, work):
        seen.append((step, work))
        return {"b": 1.0}

    step = Step("balance", "b-32px", {"resolution": 32}, {"data": "abc"}, callback)
    assert run_step(step, str(tmp_path)) == {"b": 1.0}
    assert seen == [(step, os.path.join(step.folder(str(tmp_path)), "work"))]


def test_b_is_computed_once_and_every_snr_joint_model_trains_with_the_balance_steps_b(tmp_path, monkeypatch):
    import sys

    import dakter_hf.data.balance as balance_module
    from dakter_hf.experiment.steps import run_step
    from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline

    original, calls = balance_module.compute_balance_stats, []

    def counted(*args, **kwargs):
        calls.append(kwargs.get("resolution"))
        return original(*args, **kwargs)

    for module in list(sys.modules.values()):  # wherever the package holds Eq. 9 under its name
        named = getattr(module, "__name__", "").startswith("dakter_hf")
        if named and getattr(module, "compute_balance_stats", None) is original:
            monkeypatch.setattr(module, "compute_balance_stats", counted)
    joint = {"resolution": 32, "unet_preset": "tiny", "train_batch_size": 4, "learning_rate": 1e-3}
    joint.update(max_train_steps=1, checkpointing_steps=1)
    config = load_experiment_config(tiny_config(tmp_path, arms=("real", "dakter-kd", "ddpm-l2", "b-1"), joint=joint))
    runner = ExperimentRunner(config)
    plan = runner.plan
    assert [s.kind for s in plan.steps].count("balance") == 1
    for step in plan.steps:
        if step.kind in ("data", "balance", "joint"):
            runner.results[step.key] = run_step(step, runner.root)
    assert calls == [32]  # the balance step's; neither SNR joint step computed b again
    b = runner.result(plan.balance)["b"]
    for arm, expected in (("dakter-kd", b), ("ddpm-l2", b), ("b-1", 1.0)):
        joint_step = plan.joint_of_arm[(arm, 1.0)]
        assert joint_step.inputs == {"data": plan.data.key}  # keys as before: b adds no input
        pipeline = DAKTerPipeline.load_config(os.path.join(runner.work(joint_step), "pipeline"))
        assert pipeline["balancing_factor"] == expected and runner.result(joint_step)["b"] == expected
        assert pipeline["balance_resolution"] == (32 if arm != "b-1" else None)


def test_report_has_a_calibration_column_and_a_reliability_diagram(finished):
    tmp_path, _ = finished
    report, markdown = read_report(tmp_path)
    rows = {row["Arm"]: row for row in parse_markdown_table(markdown.split("## Table 1")[1])}
    for entry in report["summary"]["table1"]:
        values = student_values(tmp_path, report, entry["arm"], "ece")
        assert entry["ece"]["values"] == pytest.approx(values)
        assert rows[entry["arm"]]["ECE (%)"].split(" ± ")[0] == f"{100 * sum(values) / len(values):.2f}"
    figure = report["figures"]["reliability_segformer-b0"]
    assert os.path.getsize(tmp_path / "report" / figure) > 1000 and f"]({figure})" in markdown
    assert "never on test" in markdown  # the temperature-scaling note
