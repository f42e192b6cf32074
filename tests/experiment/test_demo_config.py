"""The packaged `dakter demo --full` experiment: chosen on development seeds, reported on fresh ones."""

import glob
import os
from importlib import resources

from dakter_hf.experiment.config import load_experiment_config
from dakter_hf.experiment.runner import ExperimentRunner


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_reports_seeds_its_regime_was_not_chosen_on(tmp_path):
    demo = load_experiment_config(
        str(resources.files("dakter_hf.configs") / "demo_full.yaml"), output_dir=str(tmp_path)
    )
    regimes = [
        load_experiment_config(p) for p in glob.glob(os.path.join(ROOT, "configs/experiments/demo_regimes/*.yaml"))
    ]
    assert regimes, "the regime files the demo was chosen from"
    chosen_on = {seed for regime in regimes for seed in regime.seeds}
    assert not set(demo.seeds) & chosen_on and len(demo.seeds) == 5
    # the demo is one of the regimes tried (same data, joint model and students), on other seeds
    same = [r for r in regimes if (r.data, r.joint, r.students) == (demo.data, demo.joint, demo.students)]
    assert len(same) == 1
    # its comparison is against a real-only student trained as long as the equal-epochs arms
    assert demo.baseline == "real-long" and demo.budget == "equal_epochs"
    plan = ExperimentRunner(demo).plan
    steps = {run["arm"]: run["step"] for run in plan.runs if run["seed"] == demo.seeds[0]}
    assert steps["real-long"].settings["max_steps"] == 2 * steps["real"].settings["max_steps"]
    assert plan.segmenter_runs, "the joint model is scored as a segmenter"
