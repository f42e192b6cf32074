"""`dakter evaluate` (Table-4 metrics of a student) and `dakter segment` (masks for scenes of any size)."""

from __future__ import annotations

import math
import os
import sys

from dakter_hf.data.options import SOURCE_HELP, add_source_options, load_from_args
from dakter_hf.data.raster import DEFAULT_MAX_PIXELS
from dakter_hf.data.raster import IMAGE_EXTENSIONS as IMAGE_SUFFIXES
from dakter_hf.errors import DataError, PixelLimitError
from dakter_hf.utils.files import atomic_write_json
from dakter_hf.utils.ownership import check_output_path, claim_folder, read_marker


# ------------------------------------------------------------------------- evaluate
def _register_evaluate(sub) -> None:
    parser = sub.add_parser(
        "evaluate", help="a student's segmentation metrics (mIoU, F1, precision, recall, per class) on a split"
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="student folder (from train_student.py) or Hub id")
    which.add_argument(
        "--constant",
        type=int,
        metavar="CLASS_ID",
        help="score the predictor that says this class everywhere (0: the all-background baseline)",
    )
    parser.add_argument("--data", required=True, help=SOURCE_HELP)
    add_source_options(parser)
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--resolution", type=int, default=None, help="input size (default: the student's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when present)")
    parser.add_argument("--json", default=None, help="also write the metrics here")
    parser.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from dakter_hf.data.features import class_names_of  # loaded when the command runs: `dakter --help` stays fast
    from dakter_hf.data.sources import source_path
    from dakter_hf.students.inference import evaluate_constant, evaluate_student
    from dakter_hf.students.metrics import format_calibration_row, format_table4_row, to_json
    from dakter_hf.students.models import load_student, student_resolution

    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {args.batch_size}")
    # the one output rule (ownership.py), before the evaluation runs: --json is not the model, the data or inside them
    check_output_path(args.json, [args.model, source_path(args.data)], kind="evaluate", flag="--json", file=True)
    if args.constant is not None:
        split = load_from_args(args, args.data, args.split)[args.split]
        result, resolution = evaluate_constant(split, args.constant), None
        print(
            f"constant class {args.constant} on {args.data} [{args.split}], {result['num_images']} images, native "
            "size:"
        )
    else:
        model, processor = load_student(args.model)
        resolution = args.resolution or student_resolution(model, processor)
        if not resolution or resolution <= 0:
            raise ValueError("--resolution is needed: the student records no input size")
        split = load_from_args(args, args.data, args.split)[args.split]
        result = evaluate_student(
            model, split, resolution, batch_size=args.batch_size, device=args.device or _default_device()
        )
        print(
            f"{args.model} on {args.data} [{args.split}], {result['num_images']} images at {resolution} px (masks at "
            "their own size):"
        )
    print(format_table4_row(result, dict(enumerate(class_names_of(split)))))
    if "ece" in result:
        print(format_calibration_row(result, dict(enumerate(class_names_of(split)))))
    if args.json:
        record = {
            "model": args.model,
            "constant": args.constant,
            "data": args.data,
            "split": args.split,
            "resolution": resolution,
            **to_json(result),
        }
        print(f"wrote {atomic_write_json(args.json, record)}")
    return 0


def _default_device() -> str:
    import torch  # loaded when the command runs: `dakter --help` stays fast

    return "cuda" if torch.cuda.is_available() else "cpu"


# -------------------------------------------------------------------------- segment
def _register_segment(sub) -> None:
    parser = sub.add_parser(
        "segment", help="masks and class probabilities for SAR images of any size (overlapping tiles)"
    )
    parser.add_argument("inputs", nargs="+", help="image files or folders of images (PNG, JPEG, TIFF)")
    parser.add_argument("--model", required=True, help="student folder (from train_student.py) or Hub id")
    parser.add_argument(
        "--out",
        required=True,
        help=(
            "output folder: NAME_mask.png, NAME_probabilities.npy, NAME_oil.png, NAME_oil_probability.tif and "
            "NAME_entropy.tif (per-pixel uncertainty, nats; both float32 with the input's georeferencing) per image"
        ),
    )
    parser.add_argument(
        "--pixel-scale",
        default="auto",
        help="resize factor applied before tiling; auto: the student's training scale (its resolution / the training "
        "images' size)",
    )
    parser.add_argument("--overlap", type=float, default=0.25, help="window overlap fraction in [0, 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"largest scene in pixels, checked from the file header (default {DEFAULT_MAX_PIXELS}, the Space's)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when present)")
    parser.set_defaults(func=_cmd_segment)


def _image_files(inputs):
    """(image files, [(input, why)] for the inputs that give none); duplicate names are refused outright."""
    files, missing = [], []
    for item in inputs:
        if os.path.isdir(item) and (read_marker(item) or {}).get("kind") == "segment":
            missing.append((item, "a `dakter segment` output folder: its files are outputs, not scenes"))
        elif os.path.isdir(item):
            found = sorted(os.path.join(item, n) for n in os.listdir(item) if n.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                missing.append((item, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder"))
            files.extend(found)
        elif os.path.isfile(item):
            files.append(item)
        else:
            missing.append((item, "no such file or folder"))
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f"several inputs share the name(s) {duplicates}; their outputs would overwrite each other")
    return files, missing


def _failure(path: str, error: Exception) -> str:
    """One line naming the input and why it was not segmented."""
    text = str(error)
    if isinstance(error, PixelLimitError) and error.max_pixels and error.height:
        text += "; raise --max-pixels to segment it (about 100 bytes of memory per pixel)"
    return text if text.startswith(path) else f"{path}: {text}"


def _cmd_segment(args) -> int:
    from dakter_hf.data.features import oil_class_index  # loaded when the command runs: `dakter --help` stays fast
    from dakter_hf.students.models import load_student
    from dakter_hf.students.segment import segment_file

    if not 0 <= args.overlap < 1:
        raise ValueError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be > 0, got {args.batch_size}")
    try:
        scale = None if args.pixel_scale == "auto" else float(args.pixel_scale)
    except ValueError:
        scale = -1.0
    if scale is not None and not 0 < scale < math.inf:
        raise ValueError(f"--pixel-scale must be a finite number > 0 or auto, got {args.pixel_scale!r}")
    if args.max_pixels < 1:
        raise ValueError(f"--max-pixels must be positive, got {args.max_pixels}")
    # the one output rule (ownership.py): --out is no input scene, model or folder of them, and no other command's
    check_output_path(args.out, [*args.inputs, args.model], kind="segment", flag="--out")
    files, missing = _image_files(args.inputs)
    failed = [f"{item}: {why}" for item, why in missing]
    for line in failed:
        print(f"dakter segment: error: {line}", file=sys.stderr)
    if files:  # a batch: each unreadable input is reported and the others are still segmented
        model, processor = load_student(args.model)
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        claim_folder(args.out, "segment", {}, flag="--out")  # marked: a later run never reads it as scenes
    for path in files:
        try:
            written = segment_file(
                path,
                model,
                processor,
                args.out,
                pixel_scale=scale,
                overlap=args.overlap,
                batch_size=args.batch_size,
                device=args.device or _default_device(),
                max_pixels=args.max_pixels,
                oil_class=oil_class_index(names),
            )
        except (DataError, OSError) as error:  # this input only; a bug elsewhere still gives its traceback
            failed.append(_failure(path, error))
            print(f"dakter segment: error: {failed[-1]}", file=sys.stderr)
            continue
        print(f"{path}: {written['summary']} -> {written['mask']}")
    if failed:
        done = len(files) + len(missing) - len(failed)
        print(f"dakter segment: {len(failed)} input(s) failed, {done} segmented", file=sys.stderr)
        return 2
    return 0


REGISTRARS = [_register_evaluate, _register_segment]
