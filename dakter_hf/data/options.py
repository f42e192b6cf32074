"""The command-line options that name a dataset source, shared by every `dakter` subcommand."""

from __future__ import annotations

import argparse
from typing import Optional

from dakter_hf.data.raster import Normalization


SOURCE_HELP = "sos:ROOT, osd:ROOT, folder:ROOT, simulate:N[,M] (M test scenes), or a saved dataset dir"


def add_source_options(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    """Options that complete a source spec (sensor, class names, simulator settings).

    `seed=False` for commands with a `--seed` of their own (it then also seeds the source).
    """
    parser.add_argument("--sensor", default="palsar", choices=["palsar", "sentinel"], help="SOS sensor")
    parser.add_argument("--classes", default=None, help="comma-separated class names (folder:ROOT)")
    parser.add_argument("--num-classes", type=int, default=2, help="simulate:N classes (2: SOS-like, 5: OSD-like)")
    parser.add_argument("--size", type=int, default=64, help="simulate:N image size")
    parser.add_argument(
        "--intensity",
        default="linear",
        choices=["linear", "db"],
        help="16-bit/float images: values as stored (linear) or linear power to dB first",
    )
    parser.add_argument(
        "--clip-percentiles",
        default=None,
        metavar="LOW,HIGH",
        help="stretch LOW..HIGH percentile to 0..255 (default: 8-bit images as stored, others 1,99)",
    )
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="simulate:N seed; OSD all-sea patch selection seed")


def normalization_from_options(
    spec: str, intensity: str = "linear", clip_percentiles: Optional[str] = None
) -> Normalization:
    """--intensity / --clip-percentiles; they apply to folder:ROOT (SOS and OSD ship 8-bit JPEGs)."""
    normalization = Normalization.from_options(intensity, clip_percentiles)
    if normalization != Normalization() and not spec.startswith("folder:"):
        raise ValueError(
            f"--intensity / --clip-percentiles apply to folder:ROOT sources; {spec} is read as stored (8-bit)"
        )
    return normalization


def normalization_from_args(args: argparse.Namespace, spec: str = "") -> Normalization:
    return normalization_from_options(
        spec, getattr(args, "intensity", "linear"), getattr(args, "clip_percentiles", None)
    )


def load_from_args(args: argparse.Namespace, spec: str, split):
    from dakter_hf.data.sources import load_source  # loaded when a command reads data: `dakter --help` stays fast

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    return load_source(
        spec,
        sensor=args.sensor,
        split=split,
        class_names=classes,
        num_classes=args.num_classes,
        size=args.size,
        seed=args.seed,
        normalization=normalization_from_args(args, spec),
    )
