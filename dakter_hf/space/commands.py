"""`dakter space`: run the Gradio Space locally (the same app as spaces/app.py)."""

from __future__ import annotations

import os

from dakter_hf.space.options import add_arguments


def repo_models_root() -> str:
    """spaces/models of a source checkout (editable install); the Space's default models."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(os.path.dirname(package), "spaces", "models")


def _register_space(sub) -> None:
    parser = sub.add_parser(
        "space", help="run the Gradio Space: generate SAR images with soft labels, segment uploaded scenes"
    )
    add_arguments(parser)
    parser.set_defaults(func=_cmd_space)


def _cmd_space(args) -> int:
    from dakter_hf.space.launch import (
        create_demo,
        launch,
    )  # gradio loads when the Space runs: `dakter --help` stays fast

    root = args.models_root or repo_models_root()
    demo = create_demo(args.pipeline, args.students, root, args.max_pixels)
    launch(demo, args.host, args.port)
    return 0


REGISTRARS = [_register_space]
