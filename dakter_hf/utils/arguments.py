"""One argument parser for the training launchers: dataclasses -> flags, plus `--config FILE`.

Built on `transformers.HfArgumentParser`: every init field of every dataclass is a
`--flag` (bools take `--flag`, `--flag true/false/yes/no`, and `--no_flag` when they
default to True). On top of it:

* `--config FILE` (YAML or JSON mapping of field names to values). Its values become the
  parser's defaults, so any flag on the command line wins over the file. Each value is
  converted with its flag's own `type` (YAML 1.1 reads `1e-4` as a string), values that
  are already typed (an int for a float field, a bool, a list) are accepted, and a key
  that no dataclass knows or a value that does not convert raises `ValueError` naming
  the file and the key (never an argparse usage exit).
* `Optional[...]` fields read `none`, `null` or an empty string as None, on the command
  line and in the file (HfArgumentParser would call `float("none")`). The one exception
  is a field whose *default* is itself such a word, e.g. `TrainingArguments.report_to`
  (default `"none"`, and `report_to=None` would become `[None]`): there the word is the value.

The implicit `<script>.args` file of HfArgumentParser is not read (`--config` replaces
it), and flags cannot be abbreviated (`--learning_rat` is an error, as in the config file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import types
import typing
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import yaml
from transformers import HfArgumentParser

from dakter_hf.errors import DataError
from dakter_hf.utils.launcher import stop_with_launcher


NONE_WORDS = ("none", "null", "")


def _is_none_word(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS)


def _allows_none(hint: Any) -> bool:
    """`Optional[X]`, `X | None`, `Union[None, X, Y]`."""
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _none_or(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a flag's `type` so that none/null/empty mean None; argparse error messages keep the base type's name."""

    def convert_or_none(value):
        return None if _is_none_word(value) else convert(value)

    convert_or_none.__name__ = getattr(convert, "__name__", "value")
    return convert_or_none


def finite_float(value: Any) -> float:
    """`float` without inf and nan: no flag of a launcher means them (`--scale inf`, `--learning_rate nan`)."""
    number = float(value)
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value!r}")
    return number


finite_float.__name__ = "float"  # argparse's message: "invalid float value: 'inf'"


class RepeatableList(argparse.Action):
    """`--flag a --flag b c` -> [a, b, c]; unlike argparse's "extend", the first use on the
    command line replaces the default (e.g. a list from `--config`) instead of adding to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = getattr(namespace, "_repeatable_seen", set())
        current = [] if self.dest not in seen else list(getattr(namespace, self.dest) or [])
        seen.add(self.dest)
        setattr(namespace, "_repeatable_seen", seen)
        setattr(namespace, self.dest, current + list(values if isinstance(values, list) else [values]))


class ArgumentParser(HfArgumentParser):
    """HfArgumentParser whose Optional flags read none/null/empty as None, plus a `config_flag FILE` option."""

    def __init__(
        self, dataclass_types: Sequence[type], description: Optional[str] = None, config_flag: str = "--config"
    ):
        super().__init__(list(dataclass_types), description=description, allow_abbrev=False)
        self.field_defaults = {
            f.name: f.default for dtype in self.dataclass_types for f in dataclasses.fields(dtype) if f.init
        }
        self.nullable_fields = set()
        for dtype in self.dataclass_types:
            hints = typing.get_type_hints(dtype)
            for f in dataclasses.fields(dtype):
                if (
                    f.init
                    and _allows_none(hints[f.name])
                    and not (isinstance(f.default, str) and _is_none_word(f.default))
                ):
                    self.nullable_fields.add(f.name)
        # HfArgumentParser has no hook for the conversion of a flag: wrap the `type` of the actions it made
        for action in self._actions:
            if action.type is float:
                action.type = finite_float
            if action.dest in self.nullable_fields and action.type is not None:
                action.type = _none_or(action.type)
        self.config_dest = config_flag.lstrip("-").replace("-", "_")
        if self.config_dest in self.field_defaults:
            raise ValueError(f"{config_flag} clashes with a dataclass field of the same name")
        self.add_argument(
            config_flag,
            dest=self.config_dest,
            default=None,
            metavar="FILE",
            help="YAML or JSON file of any of these arguments; the command line wins",
        )

    def error(self, message: str):
        """A bad flag value is one line and exit code 2, like every other user error of a launcher (no usage block)."""
        self.exit(2, f"{self.prog}: error: {message} (--help lists the arguments)\n")

    def field_action(self, name: str) -> argparse.Action:
        """The flag that fills field `name` (`--name`, not the `--no_name` complement of a bool)."""
        return next(
            a for a in self._actions if a.dest == name and a.option_strings and a.option_strings[0] == f"--{name}"
        )


def read_config_file(path: str) -> Dict[str, Any]:
    """The raw mapping in a YAML (`.yaml`, `.yml`, anything not `.json`) or JSON file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config {path}: file not found")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        config = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"--config {path}: {' '.join(str(error).split())}") from None  # one line
    if config is None:  # an empty file
        return {}
    if not isinstance(config, dict):
        raise ValueError(
            f"--config {path}: expected a mapping of argument names to values, got {type(config).__name__}"
        )
    return config


def _convert_scalar(convert: Optional[Callable[[str], Any]], value: Any) -> Any:
    if convert is None or isinstance(value, dict):  # a mapping (e.g. a `*_kwargs` field) goes to the dataclass as is
        return value
    if isinstance(convert, type) and isinstance(value, convert) and (convert is bool or not isinstance(value, bool)):
        return value  # already the right type (a YAML bool is not an int here)
    return convert(value if isinstance(value, str) else str(value))  # `1e-4`, or an int for a float field


def convert_config_values(parser: ArgumentParser, config: Dict[str, Any], path: str) -> Dict[str, Any]:
    """Check the keys of `config` and convert each value like its flag would; ValueError names the file and key."""
    unknown = sorted(set(config) - set(parser.field_defaults), key=str)
    if unknown:
        raise ValueError(f"--config {path}: unknown argument(s) {unknown}")
    converted = {}
    for name, value in config.items():
        action = parser.field_action(name)
        try:
            if value is None:
                if name not in parser.nullable_fields and parser.field_defaults[name] is not None:
                    raise ValueError("this argument cannot be null")
                converted[name] = None
            elif action.nargs in ("+", "*"):
                items = list(value) if isinstance(value, (list, tuple)) else [value]
                converted[name] = [_convert_scalar(action.type, item) for item in items]
            else:
                converted[name] = _convert_scalar(action.type, value)
            for item in converted[name] if isinstance(converted[name], list) else [converted[name]]:
                if action.choices is not None and item is not None and item not in action.choices:
                    raise ValueError(f"invalid choice {item!r} (choose from {', '.join(map(repr, action.choices))})")
        except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
            raise ValueError(f"--config {path}: {name}: {error} (got {value!r})") from None
    return converted


def _parse(dataclass_types, argv, description, config_flag) -> Tuple[tuple, Dict[str, Any]]:
    parser = ArgumentParser(dataclass_types, description=description, config_flag=config_flag)
    argv = list(sys.argv[1:] if argv is None else argv)
    # find the config file first (without --help, so that the help lists the file's values as defaults)
    peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    peek.add_argument(config_flag, dest="config", default=None)
    config_path = peek.parse_known_args(argv)[0].config
    config = {}
    if config_path:
        config = convert_config_values(parser, read_config_file(config_path), config_path)
        parser.set_defaults(**config)
    outputs = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=False, look_for_args_file=False)
    return tuple(outputs[: len(parser.dataclass_types)]), config  # drop the namespace holding `--config`


def parse_arguments(
    dataclass_types: Sequence[type],
    argv: Optional[Sequence[str]] = None,
    description: Optional[str] = None,
    config_flag: str = "--config",
) -> tuple:
    """Parse `argv` (default: `sys.argv[1:]`) into one instance of each of `dataclass_types`, in order.

    `config_flag FILE` supplies defaults from a YAML/JSON mapping; the command line overrides them.
    Raises FileNotFoundError / ValueError for a bad config file; argparse exits on a bad flag value,
    and HfArgumentParser raises ValueError for unknown flags.
    """
    return _parse(dataclass_types, argv, description, config_flag)[0]


def load_config_values(path: str, dataclass_types: Sequence[type]) -> Dict[str, Any]:
    """The values of a config file, checked and converted exactly like `parse_arguments` does.

    Only the keys in the file are returned, with the values the dataclasses hold after parsing
    (so after their `__post_init__`).
    """
    path = os.fspath(path)
    objects, config = _parse(dataclass_types, ["--config", path], None, "--config")
    owner = {f.name: obj for obj in objects for f in dataclasses.fields(obj) if f.init}
    return {name: getattr(owner[name], name) for name in config}


def run_launcher(
    main: Callable[[Optional[Sequence[str]]], Any], prog: str, argv: Optional[Sequence[str]] = None
) -> Any:
    """Run a training launcher: a user error (bad argument, missing file, refused folder) is one
    line on stderr and exit code 2; tracebacks are left for bugs. Under `accelerate launch` the
    run stops when the launcher ends (`utils.launcher.stop_with_launcher`)."""

    stop_with_launcher(prog)
    try:
        return main(argv)
    except (DataError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
