"""`dakter quality`: SAR-aware statistics of a generated set against real data."""

from __future__ import annotations

import os

from dakter_hf.data.options import add_source_options, load_from_args
from dakter_hf.evaluation.soft_labels import DEFAULT_BOUNDARY_WIDTH, DEFAULT_KD_TEMPERATURE
from dakter_hf.utils.files import atomic_write_json


def _register_quality(sub) -> None:
    parser = sub.add_parser("quality", help="SAR-aware quality statistics: real vs generated (no Inception network)")
    parser.add_argument("--real", required=True, help="real data: sos:ROOT, saved dataset dir, ...")
    parser.add_argument("--generated", required=True, help="generated dataset dir (from `dakter generate`)")
    add_source_options(parser)
    parser.add_argument("--split", default="train", help="split of --real")
    parser.add_argument("--max-images", type=int, default=None, help="use the first N images of each")
    parser.add_argument("--json", default=None, help="write the report here (default: GENERATED/quality.json)")
    parser.add_argument(
        "--kd-temperature",
        type=float,
        default=DEFAULT_KD_TEMPERATURE,
        help="T of the soft-label statistics at the distillation temperature (default: %(default)s, the KD loss's)",
    )
    parser.add_argument(
        "--boundary-width",
        type=int,
        default=DEFAULT_BOUNDARY_WIDTH,
        help="soft-label entropy within this many pixels of a class boundary vs farther (default: %(default)s)",
    )
    parser.set_defaults(func=_cmd_quality)


def _cmd_quality(args) -> int:
    from dakter_hf.data.sources import (
        load_saved,
        source_path,
    )  # loaded when the command runs: `dakter --help` stays fast
    from dakter_hf.evaluation.formatting import format_quality_table
    from dakter_hf.evaluation.report import quality_report
    from dakter_hf.utils.ownership import check_generated, check_output_path

    default = os.path.join(args.generated, "quality.json")  # the report's documented place beside the generated set
    path = check_output_path(
        args.json or default,
        [source_path(args.real), args.generated],
        kind="quality",
        flag="--json",
        allowed=[default],
        file=True,
    )
    check_generated(args.generated)
    real = load_from_args(args, args.real, args.split)[args.split]
    generated = load_saved(args.generated, split="train")["train"]
    report = quality_report(
        real,
        generated,
        max_images=args.max_images,
        show_progress=True,
        kd_temperature=args.kd_temperature,
        boundary_width=args.boundary_width,
    )
    print(format_quality_table(report))
    path = atomic_write_json(path, report)
    print(f"wrote {path}")
    return 0


REGISTRARS = [_register_quality]
