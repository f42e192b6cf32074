"""`dakter data` and `dakter balance`: each a registrar adding its subparser."""

from __future__ import annotations

from dakter_hf.data.options import SOURCE_HELP, add_source_options, load_from_args, normalization_from_args
from dakter_hf.utils.ownership import check_output_path


def _register_data(sub) -> None:
    parser = sub.add_parser(
        "data", help="load a SAR dataset and write it as a Hugging Face dataset (save_to_disk + parquet)"
    )
    parser.add_argument("--source", required=True, help=SOURCE_HELP)
    add_source_options(parser)
    parser.add_argument("--split", default=None, help="one split only (default: all)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.set_defaults(func=_cmd_data)


def _cmd_data(args) -> int:
    from dakter_hf.data.balance import (
        compute_balance_stats,
    )  # loaded when the command runs: `dakter --help` stays fast
    from dakter_hf.data.export import ExportSettings, export_dataset
    from dakter_hf.data.sources import source_path

    # the one output rule (ownership.py), before the source is read
    check_output_path(args.out, [source_path(args.source)], kind="data", flag="--out", overwrite=args.overwrite)
    settings = ExportSettings(
        source=args.source,
        out=args.out,
        sensor=args.sensor,
        split=args.split,
        classes=args.classes,
        num_classes=args.num_classes,
        size=args.size,
        seed=args.seed,
        normalization=normalization_from_args(args, args.source),
        overwrite=args.overwrite,
    )
    result = export_dataset(settings)
    if result.unchanged:
        print(f"{result.out} already holds this dataset (same source, files and settings); nothing to do")
        return 0
    print(result.summary)
    split = "train" if "train" in result.data else next(iter(result.data))
    stats = compute_balance_stats(result.data[split])
    print(f"balancing factor b = {stats.b:.4f} ({split}, {stats.num_images} images, native size)")
    print(
        f"wrote {result.paths['hf']} (load_from_disk) and {result.paths['parquet']} (load_dataset('parquet', "
        "data_dir=...))"
    )
    return 0


def _register_balance(sub) -> None:
    parser = sub.add_parser("balance", help="print the SNR balancing factor b of a dataset split")
    parser.add_argument("--data", required=True, help=SOURCE_HELP)
    add_source_options(parser)
    parser.add_argument("--split", default="train")
    parser.add_argument("--resolution", type=int, default=None, help="resize to R x R first (default: native size)")
    parser.set_defaults(func=_cmd_balance)


def _cmd_balance(args) -> int:
    from dakter_hf.data.balance import (
        compute_balance_stats,
    )  # loaded when the command runs: `dakter --help` stays fast

    data = load_from_args(args, args.data, args.split)
    stats = compute_balance_stats(data[args.split], resolution=args.resolution, show_progress=True)
    where = "native size" if args.resolution is None else f"{args.resolution}x{args.resolution}"
    print(
        f"b = {stats.b:.4f}  ({stats.num_images} images, split {args.split}, {where}; P(x0) = "
        f"{stats.power_image:.4g}, P(y0) = {stats.power_label:.4g})"
    )
    return 0


REGISTRARS = [_register_data, _register_balance]
