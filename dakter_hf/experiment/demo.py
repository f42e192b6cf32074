"""`dakter demo`: the whole chain on synthetic SAR scenes (`--full`: through `dakter experiment`)."""

from __future__ import annotations

import argparse
import os
import warnings
from importlib import resources


class _OldStepsFlag(argparse.Action):
    """`--steps` of `dakter demo` is `--train-steps` now; the old spelling works for one release."""

    def __call__(self, parser, namespace, values, option_string=None):
        warnings.warn(
            "`dakter demo --steps` is deprecated and will be removed in the next release; use --train-steps",
            FutureWarning,
            stacklevel=2,
        )
        print("dakter demo: --steps is deprecated; use --train-steps (training steps of the joint model)")
        setattr(namespace, self.dest, values)


def _register_demo(sub) -> None:
    parser = sub.add_parser(
        "demo",
        help="the whole chain on synthetic SAR data: dataset, b, joint training, generation, quality, figure (--full: "
        "students and the report too)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="run the experiment runner at small scale: real-only students (600 and 1200 steps), DAKTer students "
        "(argmax, KD on final and on posterior soft labels, equal epochs) and the joint model as a segmenter, 5 seeds,"
        " ending in a report with tables and figures (about 5 min on 2 cores)",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: outputs/demo, or outputs/demo-full with --full)"
    )
    parser.add_argument(
        "--train-steps",
        dest="train_steps",
        type=int,
        default=None,
        help="joint-model training steps (default: the tiny config's)",
    )
    parser.add_argument("--steps", dest="train_steps", type=int, action=_OldStepsFlag, help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=16, help="generated samples")
    parser.add_argument("--inference-steps", type=int, default=50, help="DDIM steps for generation")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an --out written by a demo with other settings"
    )
    parser.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    """Dataset -> b -> train (tiny config) -> generate -> quality -> PNG grid, printing each result."""
    if args.full:
        return _demo_full(args)
    args.out = args.out or "outputs/demo"
    from dakter_hf.data.export import summarize  # loaded when the command runs: `dakter --help` stays fast
    from dakter_hf.data.save import save_dataset
    from dakter_hf.data.sources import load_saved, load_source
    from dakter_hf.data.visualize import generated_samples_figure
    from dakter_hf.evaluation.formatting import format_quality_table
    from dakter_hf.evaluation.report import quality_report
    from dakter_hf.generation.config import GenerationSettings
    from dakter_hf.generation.dataset import generate_dataset
    from dakter_hf.joint.arguments import JointTrainingArguments, load_config_file
    from dakter_hf.joint.training import train
    from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
    from dakter_hf.utils.files import atomic_write_json
    from dakter_hf.utils.ownership import check_output_path, claim_folder

    for flag, value in (
        ("--train-steps", args.train_steps),
        ("--samples", args.samples),
        ("--inference-steps", args.inference_steps),
    ):
        if value is not None and value <= 0:
            raise ValueError(f"{flag} must be > 0, got {value}")
    check_output_path(args.out, kind="demo", flag="--out", overwrite=args.overwrite)  # the one output rule
    config = load_config_file(str(resources.files("dakter_hf.configs") / "tiny.yaml"))
    # the demo owns --out: it redoes its own steps with the same settings, refuses anything else
    claim_folder(
        args.out,
        "demo",
        {
            "steps": args.train_steps,
            "samples": args.samples,
            "inference_steps": args.inference_steps,
            "config": config,
        },
        overwrite=args.overwrite,
    )
    data = load_source(
        config["data"], num_classes=config["num_classes"], size=config["resolution"], seed=config["seed"]
    )
    dataset_dir = os.path.join(args.out, "dataset")
    save_dataset(data, dataset_dir, overwrite=True)
    print("== 1. dataset (synthetic SAR scenes, clearly not real data)")
    print(summarize(data))
    config.update(data=dataset_dir, output_dir=os.path.join(args.out, "model"), report_to="none", overwrite=True)
    if args.train_steps:
        config["max_train_steps"] = args.train_steps
    training = JointTrainingArguments(**config)
    print(
        f"== 2. joint training: {training.max_train_steps} steps, {training.unet_preset} UNet at "
        f"{training.resolution} px"
    )
    pipeline_dir = train(training)
    pipeline_config = DAKTerPipeline.load_config(pipeline_dir)
    print(
        f"balancing factor b = {pipeline_config['balancing_factor']:.4f} (SNR value at "
        f"{pipeline_config['balance_resolution']} px)"
    )
    print(f"pipeline + model card: {pipeline_dir}")
    generated = os.path.join(args.out, "generated")
    print(f"== 3. generating {args.samples} image/soft-label pairs")
    settings = GenerationSettings(num_samples=args.samples, num_inference_steps=args.inference_steps)
    generate_dataset(pipeline_dir, generated, settings, overwrite=True)
    print(f"dataset: {generated} (parquet in data/, card README.md)")
    print("== 4. quality, real (synthetic) vs generated")
    rows = load_saved(generated, split="train")["train"]
    report = quality_report(data["train"], rows)
    print(format_quality_table(report))
    atomic_write_json(os.path.join(args.out, "quality.json"), report)
    figure = os.path.join(args.out, "samples.png")
    generated_samples_figure(rows, columns=4).save(figure)
    print(f"== 5. figure (image | oil probability | mask): {figure}")
    return 0


def _demo_full(args) -> int:
    """`dakter demo --full`: the packaged experiment file (configs/demo_full.yaml) through `dakter experiment`."""
    from dakter_hf.experiment.config import (
        load_experiment_config,
    )  # loaded when the command runs: `dakter --help` stays fast
    from dakter_hf.experiment.runner import ExperimentRunner

    if args.train_steps is not None or args.samples != 16 or args.inference_steps != 50:
        raise ValueError(
            "--full runs the packaged experiment file; --train-steps, --samples and --inference-steps apply to the "
            "quick demo only"
        )
    out = os.path.abspath(args.out or "outputs/demo-full")
    config = load_experiment_config(
        str(resources.files("dakter_hf.configs") / "demo_full.yaml"),
        output_dir=out,
        report_dir=os.path.join(out, "report"),
    )
    runner = ExperimentRunner(config)
    runner.check_paths(args.overwrite)
    report = runner.run(overwrite=args.overwrite)
    print(open(report["paths"]["markdown"], encoding="utf-8").read().split("## Joint models")[0])
    print(f"report with figures: {report['paths']['markdown']}")
    return 0


REGISTRARS = [_register_demo]
