"""`dakter` command line: data, balance, generate, quality, demo, evaluate, segment, experiment, space.

Each subpackage registers its own subcommands (a `REGISTRARS` list in its `commands` module);
this file only gathers them. Nothing inside the package imports it.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import List, Optional

from dakter_hf.data import commands as data_commands
from dakter_hf.errors import DataError
from dakter_hf.evaluation import commands as evaluation_commands
from dakter_hf.experiment import commands as experiment_commands
from dakter_hf.experiment import demo as demo_commands
from dakter_hf.generation import commands as generation_commands
from dakter_hf.space import commands as space_commands
from dakter_hf.students import commands as student_commands


COMMAND_MODULES = (
    data_commands,
    generation_commands,
    evaluation_commands,
    demo_commands,
    student_commands,
    experiment_commands,
    space_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dakter", description="DAKTer on Hugging Face: SAR data, joint diffusion, generated soft labels."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        for register in module.REGISTRARS:
            register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_finite(args)
        return args.func(args) or 0
    except (DataError, OSError, ValueError) as error:
        print(f"dakter {args.command}: error: {error}", file=sys.stderr)
        return 2


def check_finite(args: argparse.Namespace) -> None:
    """No command takes inf or nan: refuse them in any float flag before any work starts."""
    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")


if __name__ == "__main__":
    sys.exit(main())
