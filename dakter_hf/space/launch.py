"""Start the Space: `python spaces/app.py` and `dakter space` both end here (settings: `options`).

Gradio, torch and the models are imported only once the arguments are parsed, so
`--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
from typing import List, Optional

from dakter_hf.space.models import load_models, resolve_specs
from dakter_hf.space.options import MAX_UPLOAD, add_arguments, max_pixels_from
from dakter_hf.space.ui import build_demo


def create_demo(
    pipeline: Optional[str] = None,
    students: Optional[str] = None,
    models_root: Optional[str] = None,
    max_pixels: Optional[int] = None,
    workdir: Optional[str] = None,
):
    """Resolve and load the models, then build the Blocks (not launched)."""

    limit = max_pixels_from(max_pixels)
    specs = resolve_specs(pipeline, students, default_root=models_root)
    return build_demo(load_models(specs), max_pixels=limit, workdir=workdir)


def launch(demo, host: Optional[str] = None, port: Optional[int] = None, **kwargs):
    """Queue one job at a time (CPU-bound work) and serve; extra kwargs go to `Blocks.launch`."""
    demo.queue(default_concurrency_limit=1)
    return demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD, **kwargs)


def main(argv: Optional[List[str]] = None, models_root: Optional[str] = None) -> int:
    args = add_arguments(
        argparse.ArgumentParser(
            description="DAKTer Gradio Space: generate SAR images with soft labels, segment your own scene."
        )
    ).parse_args(argv)
    demo = create_demo(args.pipeline, args.students, args.models_root or models_root, args.max_pixels)
    launch(demo, args.host, args.port)
    return 0
