"""`dakter experiment --config FILE`: the whole chain, cached step by step, ending in a report."""

from __future__ import annotations


def _register_experiment(sub) -> None:
    parser = sub.add_parser(
        "experiment",
        help="run a whole DAKTer comparison from one YAML (data, b, joint models, generated sets, students, report)",
    )
    parser.add_argument("--config", required=True, help="experiment YAML (see configs/experiments/)")
    parser.add_argument("--out", default=None, help="step cache and run folder (default: the file's output_dir)")
    parser.add_argument(
        "--report-dir",
        default=None,
        help="where report.md, report.json and the figures go (default: the file's report_dir, else OUT/report)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan (which steps are cached) and stop")
    parser.add_argument(
        "--overwrite", action="store_true", help="empty OUT first (never an input); without it OUT is continued"
    )
    parser.set_defaults(func=_cmd_experiment)


def _cmd_experiment(args) -> int:
    from dakter_hf.experiment.config import (
        load_experiment_config,
    )  # loaded when the command runs: `dakter --help` stays fast
    from dakter_hf.experiment.runner import ExperimentRunner
    from dakter_hf.experiment.steps import read_done

    config = load_experiment_config(args.config, output_dir=args.out, report_dir=args.report_dir)
    runner = ExperimentRunner(config)
    runner.check_paths(args.overwrite)
    if args.dry_run:
        for index, step in enumerate(runner.plan.steps, 1):
            state = "cached" if read_done(step.folder(runner.root)) is not None else "to run"
            print(
                f"[{index}/{len(runner.plan.steps)}] {step.kind:8s} {step.label:40s} {state}  "
                f"{step.folder(runner.root)}"
            )
        return 0
    report = runner.run(overwrite=args.overwrite)
    print(f"report: {report['paths']['markdown']}")
    return 0


REGISTRARS = [_register_experiment]
