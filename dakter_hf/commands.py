"""`dakter generate`, `dakter quality` and `dakter demo`: each a registrar adding its subparser."""

from __future__ import annotations

import json
import os


# ------------------------------------------------------------------------- generate
def _register_generate(sub) -> None:
    parser = sub.add_parser("generate", help="sample a DAKTer pipeline into a Hugging Face dataset (image, soft_label, mask)")
    parser.add_argument("--pipeline", required=True, help="pipeline folder or Hub id")
    parser.add_argument("--out", required=True, help="output dataset folder")
    count = parser.add_mutually_exclusive_group(required=True)
    count.add_argument("-n", "--num-samples", type=int, help="number of samples N")
    count.add_argument("--scale", type=float, help="N as a fraction of the real training set (needs --real)")
    parser.add_argument("--real", default=None, help="real training data for --scale (sos:ROOT, saved dir, ...)")
    parser.add_argument("--sensor", default="palsar", help="SOS sensor of --real")
    parser.add_argument("--seed", type=int, default=0, help="base seed: sample i uses seed + i")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=256, help="rows per parquet shard (the unit of resumption)")
    parser.add_argument("--steps", type=int, default=200, help="DDIM steps (paper: 200)")
    parser.add_argument("--eta", type=float, default=0.0)
    parser.add_argument("--label-noise", default="consistent", choices=["consistent", "literal"])
    parser.add_argument("--license", default="other", help="licence field of the dataset card")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: Accelerate's choice)")
    parser.add_argument("--no-save-to-disk", action="store_true", help="write only the parquet shards")
    parser.add_argument("--overwrite", action="store_true", help="delete --out first")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload card and shards as a Hub dataset repo")
    parser.add_argument("--private", action="store_true")
    parser.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    from .generate import generate_dataset, push_generated_dataset

    num_samples = args.num_samples
    if args.scale is not None:
        if not args.real:
            raise ValueError("--scale needs --real (the real training data the fraction refers to)")
        if args.scale <= 0:
            raise ValueError(f"--scale must be > 0, got {args.scale}")
        from .data.sources import load_source

        real = load_source(args.real, sensor=args.sensor, split="train")["train"]
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
    parser.add_argument("--sensor", default="palsar")
    parser.add_argument("--split", default="train", help="split of --real")
    parser.add_argument("--max-images", type=int, default=None, help="use the first N images of each")
    parser.add_argument("--json", default=None, help="write the report here (default: GENERATED/quality.json)")
    parser.set_defaults(func=_cmd_quality)


def _cmd_quality(args) -> int:
    from .data.sources import load_source
    from .quality import format_quality_table, quality_report

    real = load_source(args.real, sensor=args.sensor, split=args.split)[args.split]
    generated = load_source(args.generated, split="train")["train"]
    report = quality_report(real, generated, max_images=args.max_images, show_progress=True)
    print(format_quality_table(report))
    path = args.json or os.path.join(args.generated, "quality.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, allow_nan=False)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")
    return 0


REGISTRARS = [_register_generate, _register_quality]
