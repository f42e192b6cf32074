"""The Space's settings and limits, without heavy imports (so `dakter --help` stays fast).

Arguments win over environment variables (what a Hugging Face Space can set):

    --pipeline     DAKTER_PIPELINE     pipeline folder or Hub id
    --students     DAKTER_STUDENTS     comma-separated student folders or Hub ids
    --max-pixels   DAKTER_MAX_PIXELS   largest scene the Segment tab accepts
    --host/--port  GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Gradio reads these itself)
"""

from __future__ import annotations

import argparse
import os
from typing import Optional

from dakter_hf.data.raster import DEFAULT_MAX_PIXELS  # shared with `dakter segment`; already loaded by `dakter`


MAX_UPLOAD = "256mb"  # Gradio refuses bigger uploads before they reach the app


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--pipeline", default=None, help="DAKTer pipeline folder or Hub id (env DAKTER_PIPELINE)")
    parser.add_argument(
        "--students", default=None, help="comma-separated student folders or Hub ids (env DAKTER_STUDENTS)"
    )
    parser.add_argument(
        "--models-root", default=None, help="folder with pipeline/ and student-*/ used when none are given"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help=f"largest scene in pixels (env DAKTER_MAX_PIXELS; default {DEFAULT_MAX_PIXELS})",
    )
    parser.add_argument(
        "--host", default=None, help="address to listen on (default: Gradio's, 127.0.0.1; a Space sets 0.0.0.0)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860)")
    return parser


def max_pixels_from(value: Optional[int]) -> int:
    value = value if value is not None else int(os.environ.get("DAKTER_MAX_PIXELS", DEFAULT_MAX_PIXELS))
    if value < 1:
        raise ValueError(f"--max-pixels must be positive, got {value}")
    return value
