"""`dakter` command line: data, balance, generate, quality, demo, evaluate, segment, experiment, space."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .sources_cli import SOURCE_HELP, add_source_options, load_from_args


def summarize(data) -> str:
    """Splits, counts, image size, classes and their pixel shares."""
    import numpy as np

    from .data.arrays import mask_to_ids
    from .data.features import class_names_of

    names = class_names_of(data)
    lines = [f"classes ({len(names)}): " + ", ".join(f"{i}={n}" for i, n in enumerate(names))]
    for split, dataset in data.items():
        counts = np.zeros(len(names), dtype=np.int64)
        sizes = set()
        for mask in dataset["mask"]:
            ids = mask_to_ids(mask)
            sizes.add(f"{ids.shape[1]}x{ids.shape[0]}")
            counts += np.bincount(ids.ravel(), minlength=len(names))[: len(names)]
        shares = ", ".join(f"{n} {100 * c / max(counts.sum(), 1):.1f}%" for n, c in zip(names, counts))
        lines.append(f"{split}: {len(dataset)} images, size {', '.join(sorted(sizes))}; pixels: {shares}")
    return "\n".join(lines)


DATA_CARD = """# {name}

A segmentation dataset written by `dakter data` from `{source}`{sensor}.

{summary}

Images: grey uint8. Normalisation of the source pixels: {normalization}.
Load: `datasets.load_from_disk("hf")` or `datasets.load_dataset("parquet", data_dir="data")`.
"""


def _restore_interrupted_replace(out: str) -> None:
    """A run killed between the two renames of `replace_folder` leaves the old copy as NAME.old-*: put it back."""
    import glob

    olds = glob.glob(glob.escape(out) + ".old-*")
    if not os.path.exists(out) and len(olds) == 1 and os.path.isdir(olds[0]):
        os.replace(olds[0], out)


def cmd_data(args) -> int:
    import json
    import shutil
    import tempfile

    from .balance import compute_balance_stats
    from .data.build import building_cache
    from .data.io import save_dataset
    from .data.sources import source_path
    from .ownership import MARKER, FolderError, FolderLock, check_not_an_input, read_marker, remove_leftovers, settings_hash
    from .sources_cli import normalization_from_args

    out = os.path.abspath(args.out)
    normalization = normalization_from_args(args, args.source)
    settings = {"source": args.source, "sensor": args.sensor, "split": args.split, "classes": args.classes, "num_classes": args.num_classes, "size": args.size, "seed": args.seed, "normalization": normalization.to_dict()}
    check_not_an_input(out, [source_path(args.source)])
    parent, name = os.path.dirname(out), os.path.basename(out)
    os.makedirs(parent, exist_ok=True)
    # the folder is replaced whole, so its lock lies beside it
    with FolderLock(out, path=os.path.join(parent, f".{name}.dakter.lock")):
        _restore_interrupted_replace(out)
        existing = read_marker(out) if os.path.isdir(out) else None
        if os.path.exists(out) and existing is None and not args.overwrite:
            raise FolderError(f"--out {out} is a folder not written by `dakter data`; choose another --out, or --overwrite to replace it")
        remove_leftovers(parent, {name + ".tmp-*": "staging", name + ".old-*": "replaced copy"})
        cache = tempfile.mkdtemp(prefix=name + ".tmp-", dir=parent)  # no second copy in ~/.cache
        try:
            with building_cache(cache):
                data = load_from_args(args, args.source, args.split)
            # the loaders' fingerprints change with the input files (paths, sizes, times)
            inputs = {"source": args.source, "splits": {split: dataset._fingerprint for split, dataset in data.items()}}
            record = {"kind": "data", "settings_hash": settings_hash(settings, inputs), "settings": settings, "inputs": inputs}
            if existing is not None and not args.overwrite:
                if existing.get("settings_hash") == record["settings_hash"]:
                    print(f"{out} already holds this dataset (same source, files and settings); nothing to do")
                    return 0
                raise FolderError(f"--out {out} is a `{existing.get('kind')}` folder with other settings or input files; choose another --out, or --overwrite to replace it")
            text = summarize(data)
            card = DATA_CARD.format(name=name, source=args.source, sensor=f" (sensor {args.sensor})" if args.source.startswith("sos:") else "", summary=text, normalization=normalization.describe())
            paths = save_dataset(data, out, overwrite=args.overwrite, extra_files={MARKER: json.dumps(record, indent=2) + "\n", "README.md": card})
            print(text)
            split = "train" if "train" in data else next(iter(data))
            stats = compute_balance_stats(data[split])
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"balancing factor b = {stats.b:.4f} ({split}, {stats.num_images} images, native size)")
    print(f"wrote {paths['hf']} (load_from_disk) and {paths['parquet']} (load_dataset('parquet', data_dir=...))")
    return 0


def cmd_balance(args) -> int:
    from .balance import compute_balance_stats

    data = load_from_args(args, args.data, args.split)
    stats = compute_balance_stats(data[args.split], resolution=args.resolution, show_progress=True)
    where = "native size" if args.resolution is None else f"{args.resolution}x{args.resolution}"
    print(f"b = {stats.b:.4f}  ({stats.num_images} images, split {args.split}, {where}; P(x0) = {stats.power_image:.4g}, P(y0) = {stats.power_label:.4g})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dakter", description="DAKTer on Hugging Face: SAR data, joint diffusion, generated soft labels.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="load a SAR dataset and write it as a Hugging Face dataset (save_to_disk + parquet)")
    data.add_argument("--source", required=True, help=SOURCE_HELP)
    add_source_options(data)
    data.add_argument("--split", default=None, help="one split only (default: all)")
    data.add_argument("--out", required=True, help="output folder")
    data.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    data.set_defaults(func=cmd_data)

    balance = sub.add_parser("balance", help="print the SNR balancing factor b of a dataset split")
    balance.add_argument("--data", required=True, help=SOURCE_HELP)
    add_source_options(balance)
    balance.add_argument("--split", default="train")
    balance.add_argument("--resolution", type=int, default=None, help="resize to R x R first (default: native size)")
    balance.set_defaults(func=cmd_balance)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands():
    """Subcommands that live next to their implementation."""
    from . import commands, space_command
    from .experiment import commands as experiment_commands
    from .students import commands as student_commands

    return commands.REGISTRARS + student_commands.REGISTRARS + experiment_commands.REGISTRARS + space_command.REGISTRARS


def main(argv: Optional[List[str]] = None) -> int:
    from .data.build import DataError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (DataError, OSError, ValueError) as error:
        print(f"dakter {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
