"""`dakter generate`, `dakter quality` and `dakter demo`: each a registrar adding its subparser."""

from __future__ import annotations

import os

from .data.io import atomic_write_json
from .sources_cli import add_source_options, load_from_args


# ------------------------------------------------------------------------- generate
def _register_generate(sub) -> None:
    parser = sub.add_parser("generate", help="sample a DAKTer pipeline into a Hugging Face dataset (image, soft_label, mask)")
    parser.add_argument("--pipeline", required=True, help="pipeline folder or Hub id")
    parser.add_argument("--out", required=True, help="output dataset folder")
    count = parser.add_mutually_exclusive_group(required=True)
    count.add_argument("-n", "--num-samples", type=int, help="number of samples N")
    count.add_argument("--scale", type=float, help="N as a fraction of the real training set (needs --real)")
    parser.add_argument("--real", default=None, help="real training data for --scale (sos:ROOT, saved dir, ...)")
    add_source_options(parser, seed=False)
    parser.add_argument("--seed", type=int, default=0, help="base seed: sample i uses seed + i")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per pipeline call (does not change the result)")
    parser.add_argument("--shard-size", type=int, default=256, help="rows per parquet shard (the unit of resumption)")
    parser.add_argument("--steps", type=int, default=200, help="sampler steps (paper: 200 DDIM steps; DPM-Solver++ needs far fewer)")
    parser.add_argument("--scheduler", default=None, help="ddim (default: the pipeline's), dpm++, dpm++-3m, unipc, euler, euler-ancestral, heun, or a diffusers scheduler class name")
    parser.add_argument("--dtype", default=None, choices=["fp32", "fp16", "bf16"], help="weights' precision while sampling (default: as saved)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0: deterministic, the paper)")
    parser.add_argument("--label-noise", default="consistent", choices=["consistent", "literal"])
    parser.add_argument("--license", default="other", help="licence field of the dataset card")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: Accelerate's choice)")
    parser.add_argument("--no-save-to-disk", action="store_true", help="write only the parquet shards")
    parser.add_argument("--overwrite", action="store_true", help="delete --out first")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload card and shards as a Hub dataset repo")
    parser.add_argument("--private", action="store_true", help="create the Hub dataset repo as private")
    parser.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    from .generate import generate_dataset, push_generated_dataset

    num_samples = args.num_samples
    if args.scale is not None:
        if not args.real:
            raise ValueError("--scale needs --real (the real training data the fraction refers to)")
        if args.scale <= 0:
            raise ValueError(f"--scale must be > 0, got {args.scale}")
        real = load_from_args(args, args.real, "train")["train"]
        num_samples = max(1, round(args.scale * len(real)))
        print(f"--scale {args.scale} of {len(real)} real training images: N = {num_samples}")
    done = generate_dataset(
        args.pipeline,
        args.out,
        num_samples=num_samples,
        base_seed=args.seed,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        num_inference_steps=args.steps,
        eta=args.eta,
        label_noise=args.label_noise,
        license=args.license,
        save_to_disk=not args.no_save_to_disk,
        overwrite=args.overwrite,
        device=args.device,
        scheduler=args.scheduler,
        dtype=args.dtype,
    )
    if done:
        print(f"wrote {num_samples} samples to {done} (parquet: {os.path.join(done, 'data')})")
        if args.push_to_hub:
            push_generated_dataset(done, args.push_to_hub, private=args.private)
            print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0


# -------------------------------------------------------------------------- quality
def _register_quality(sub) -> None:
    parser = sub.add_parser("quality", help="SAR-aware quality statistics: real vs generated (no Inception network)")
    parser.add_argument("--real", required=True, help="real data: sos:ROOT, saved dataset dir, ...")
    parser.add_argument("--generated", required=True, help="generated dataset dir (from `dakter generate`)")
    add_source_options(parser)
    parser.add_argument("--split", default="train", help="split of --real")
    parser.add_argument("--max-images", type=int, default=None, help="use the first N images of each")
    parser.add_argument("--json", default=None, help="write the report here (default: GENERATED/quality.json)")
    parser.set_defaults(func=_cmd_quality)


def _cmd_quality(args) -> int:
    from .data.sources import load_saved
    from .quality import format_quality_table, quality_report

    real = load_from_args(args, args.real, args.split)[args.split]
    generated = load_saved(args.generated, split="train")["train"]
    report = quality_report(real, generated, max_images=args.max_images, show_progress=True)
    print(format_quality_table(report))
    path = atomic_write_json(args.json or os.path.join(args.generated, "quality.json"), report)
    print(f"wrote {path}")
    return 0


REGISTRARS = [_register_generate, _register_quality]


# ----------------------------------------------------------------------------- demo
def _register_demo(sub) -> None:
    parser = sub.add_parser("demo", help="the whole chain on synthetic SAR data: dataset, b, joint training, generation, quality, figure (--full: students and the report too)")
    parser.add_argument("--full", action="store_true", help="run the experiment runner at small scale: a real-only and a DAKTer-KD student over 5 seeds, ending in a report with tables and figures (~4 min on 2 cores)")
    parser.add_argument("--out", default=None, help="output folder (default: outputs/demo, or outputs/demo-full with --full)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the tiny config's)")
    parser.add_argument("--samples", type=int, default=16, help="generated samples")
    parser.add_argument("--inference-steps", type=int, default=50, help="DDIM steps for generation")
    parser.add_argument("--overwrite", action="store_true", help="replace an --out written by a demo with other settings")
    parser.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    """Dataset -> b -> train (tiny config) -> generate -> quality -> PNG grid, printing each result."""
    if args.full:
        return _demo_full(args)
    args.out = args.out or "outputs/demo"
    from importlib import resources

    from .cli import summarize
    from .data.io import save_dataset
    from .data.sources import load_saved, load_source
    from .generate import generate_dataset
    from .pipelines.pipeline_dakter import DAKTerPipeline
    from .quality import format_quality_table, quality_report
    from .train_joint import JointTrainingArguments, load_config_file, train
    from .visualize import generated_samples_figure

    from .ownership import claim_folder

    for flag, value in (("--steps", args.steps), ("--samples", args.samples), ("--inference-steps", args.inference_steps)):
        if value is not None and value <= 0:
            raise ValueError(f"{flag} must be > 0, got {value}")
    config = load_config_file(str(resources.files("dakter_hf.configs") / "tiny.yaml"))
    # the demo owns --out: it redoes its own steps with the same settings, refuses anything else
    claim_folder(args.out, "demo", {"steps": args.steps, "samples": args.samples, "inference_steps": args.inference_steps, "config": config}, overwrite=args.overwrite)
    data = load_source(config["data"], num_classes=config["num_classes"], size=config["resolution"], seed=config["seed"])
    dataset_dir = os.path.join(args.out, "dataset")
    save_dataset(data, dataset_dir, overwrite=True)
    print("== 1. dataset (synthetic SAR scenes, clearly not real data)")
    print(summarize(data))
    config.update(data=dataset_dir, output_dir=os.path.join(args.out, "model"), report_to="none", overwrite=True)
    if args.steps:
        config["max_train_steps"] = args.steps
    training = JointTrainingArguments(**config)
    print(f"== 2. joint training: {training.max_train_steps} steps, {training.unet_preset} UNet at {training.resolution} px")
    pipeline_dir = train(training)
    pipeline_config = DAKTerPipeline.load_config(pipeline_dir)
    print(f"balancing factor b = {pipeline_config['balancing_factor']:.4f} (SNR value at {pipeline_config['balance_resolution']} px)")
    print(f"pipeline + model card: {pipeline_dir}")
    generated = os.path.join(args.out, "generated")
    print(f"== 3. generating {args.samples} image/soft-label pairs")
    generate_dataset(pipeline_dir, generated, num_samples=args.samples, num_inference_steps=args.inference_steps, overwrite=True)
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
    from importlib import resources

    from .experiment.config import load_experiment_config
    from .experiment.runner import ExperimentRunner

    if args.steps is not None or args.samples != 16 or args.inference_steps != 50:
        raise ValueError("--full runs the packaged experiment file; --steps, --samples and --inference-steps apply to the quick demo only")
    out = os.path.abspath(args.out or "outputs/demo-full")
    config = load_experiment_config(str(resources.files("dakter_hf.configs") / "demo_full.yaml"), output_dir=out, report_dir=os.path.join(out, "report"))
    report = ExperimentRunner(config).run(overwrite=args.overwrite)
    print(open(report["paths"]["markdown"], encoding="utf-8").read().split("## Joint models")[0])
    print(f"report with figures: {report['paths']['markdown']}")
    return 0


REGISTRARS.append(_register_demo)
