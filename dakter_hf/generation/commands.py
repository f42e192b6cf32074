"""`dakter generate`: sample a DAKTer pipeline into a Hugging Face dataset."""

from __future__ import annotations

import math
import os

from dakter_hf.data.options import add_source_options, load_from_args


def _register_generate(sub) -> None:
    parser = sub.add_parser(
        "generate", help="sample a DAKTer pipeline into a Hugging Face dataset (image, soft_label, mask)"
    )
    parser.add_argument("--pipeline", required=True, help="pipeline folder or Hub id")
    parser.add_argument("--out", required=True, help="output dataset folder")
    count = parser.add_mutually_exclusive_group(required=True)
    count.add_argument("-n", "--num-samples", type=int, help="number of samples N")
    count.add_argument("--scale", type=float, help="N as a fraction of the real training set (needs --real)")
    parser.add_argument("--real", default=None, help="real training data for --scale (sos:ROOT, saved dir, ...)")
    parser.add_argument(
        "--match-real",
        default=None,
        metavar="DATA",
        help="curate: over-generate and keep the N samples whose per-image oil fractions match DATA's training split "
        "(the forms --real takes; the card and OUT/curation.json say what was kept)",
    )
    parser.add_argument(
        "--over-generate",
        type=float,
        default=None,
        metavar="FACTOR",
        help="with --match-real: round(FACTOR x N) candidates, kept in OUT/candidates (default 3)",
    )
    add_source_options(parser, seed=False)
    parser.add_argument("--seed", type=int, default=0, help="base seed: sample i uses seed + i")
    parser.add_argument(
        "--batch-size", type=int, default=8, help="samples per pipeline call (does not change the result)"
    )
    parser.add_argument("--shard-size", type=int, default=256, help="rows per parquet shard (the unit of resumption)")
    parser.add_argument(
        "--steps", type=int, default=200, help="sampler steps (paper: 200 DDIM steps; DPM-Solver++ needs far fewer)"
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        help="ddim (default: the pipeline's), dpm++, dpm++-3m, unipc, euler, euler-ancestral, heun, or a diffusers "
        "scheduler class name",
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["fp32", "fp16", "bf16"],
        help="weights' precision while sampling (default: as saved)",
    )
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0: deterministic, the paper)")
    parser.add_argument("--label-noise", default="consistent", choices=["consistent", "literal"])
    parser.add_argument(
        "--soft-labels",
        dest="soft_label_source",
        default="final",
        choices=["final", "trajectory", "posterior"],
        help="where the soft label comes from: final (the last step's logits, the paper), trajectory (mean "
        "probability of the last --trajectory-steps steps) or posterior (the joint model segments its finished image)",
    )
    parser.add_argument("--trajectory-steps", type=int, default=5, help="K of --soft-labels trajectory (default 5)")
    parser.add_argument(
        "--posterior-timestep",
        type=int,
        default=None,
        help="label noise level of --soft-labels posterior (default: the last training timestep, where the labels "
        "are noise alone and the label is read from the image; 0 = the sampled label, clean)",
    )
    parser.add_argument("--license", default="other", help="licence field of the dataset card")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: Accelerate's choice)")
    parser.add_argument("--no-save-to-disk", action="store_true", help="write only the parquet shards")
    parser.add_argument("--overwrite", action="store_true", help="delete --out first")
    parser.add_argument(
        "--push-to-hub", default=None, metavar="REPO", help="upload card and shards as a Hub dataset repo"
    )
    parser.add_argument("--private", action="store_true", help="create the Hub dataset repo as private")
    parser.set_defaults(func=_cmd_generate)


def _cmd_generate(args) -> int:
    # loaded when the command runs: `dakter --help` stays fast
    from dakter_hf.data.sources import source_path
    from dakter_hf.generation.config import GenerationSettings
    from dakter_hf.generation.curation import load_real_set
    from dakter_hf.generation.dataset import generate_dataset
    from dakter_hf.generation.hub import push_generated_dataset
    from dakter_hf.utils.ownership import check_output_path

    inputs = [args.pipeline, *(source_path(spec) if spec else None for spec in (args.real, args.match_real))]
    check_output_path(args.out, inputs, kind="generate", flag="--out", overwrite=args.overwrite)
    if args.over_generate is not None and not args.match_real:
        raise ValueError("--over-generate needs --match-real (the real training data the kept set matches)")
    num_samples = args.num_samples
    if args.scale is not None:
        if not args.real:
            raise ValueError("--scale needs --real (the real training data the fraction refers to)")
        if args.scale <= 0:
            raise ValueError(f"--scale must be > 0, got {args.scale}")
        real = load_from_args(args, args.real, "train")["train"]
        if not math.isfinite(args.scale * len(real)):
            raise ValueError(f"--scale {args.scale} of {len(real)} real training images is not a finite count")
        num_samples = max(1, round(args.scale * len(real)))
        print(f"--scale {args.scale} of {len(real)} real training images: N = {num_samples}")
    settings = GenerationSettings(
        num_samples=num_samples,
        base_seed=args.seed,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        num_inference_steps=args.steps,
        eta=args.eta,
        label_noise=args.label_noise,
        soft_label_source=args.soft_label_source,
        trajectory_steps=args.trajectory_steps,
        posterior_timestep=args.posterior_timestep,
        license=args.license,
        scheduler=args.scheduler,
        dtype=args.dtype,
        save_to_disk=not args.no_save_to_disk,
        match_real=args.match_real,
        **({"over_generate": args.over_generate} if args.over_generate is not None else {}),
    )
    real_data = None
    if args.match_real:
        real_data = load_real_set(args.match_real, lambda spec: load_from_args(args, spec, "train")["train"])
        print(f"--match-real {args.match_real}: {settings.num_candidates} candidates for N = {num_samples}")
    done = generate_dataset(
        args.pipeline, args.out, settings, device=args.device, overwrite=args.overwrite, real_data=real_data
    )
    if done:
        print(f"wrote {num_samples} samples to {done} (parquet: {os.path.join(done, 'data')})")
        if args.match_real:
            print(f"kept {num_samples} of {settings.num_candidates} candidates: {os.path.join(done, 'curation.json')}")
        if args.push_to_hub:
            push_generated_dataset(done, args.push_to_hub, private=args.private)
            print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0


REGISTRARS = [_register_generate]
