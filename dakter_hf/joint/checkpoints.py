"""What a joint training run leaves in its folder: resumable checkpoints, the loss history and the final pipeline.

Each is written whole or not at all (a temporary folder or file, then a rename), so an
interrupted run leaves only leftovers that the next claim of its folder removes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any, Dict, List, Optional

from dakter_hf.joint.arguments import JointTrainingArguments
from dakter_hf.joint.balance import Balance
from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.utils.files import atomic_write_text, replace_folder


logger = logging.getLogger(__name__)


def sorted_checkpoints(output_dir: str) -> List[str]:
    if not os.path.isdir(output_dir):
        return []
    names = [n for n in os.listdir(output_dir) if n.startswith("checkpoint-") and n.split("-")[-1].isdigit()]
    return [os.path.join(output_dir, n) for n in sorted(names, key=lambda n: int(n.split("-")[-1]))]


def resume(accelerator, args: JointTrainingArguments) -> int:
    """Load the requested checkpoint; returns the step it was taken at (0 for a new run)."""
    if not args.resume_from_checkpoint:
        return 0
    if args.resume_from_checkpoint == "latest":
        found = sorted_checkpoints(args.output_dir)
        if not found:
            logger.info("no checkpoint in %s: starting a new run", args.output_dir)
            return 0
        path = found[-1]
    else:
        path = args.resume_from_checkpoint
        if not os.path.isdir(path):
            raise FileNotFoundError(f"--resume_from_checkpoint {path}: no such checkpoint folder")
    accelerator.load_state(path)
    step = int(os.path.basename(path.rstrip("/")).split("-")[-1])
    logger.info("resumed from %s at step %d", path, step)
    return step


def save_checkpoint(accelerator, args: JointTrainingArguments, step: int) -> None:
    """save_state into a temporary folder, rename, and only then drop the oldest checkpoints."""
    target = os.path.join(args.output_dir, f"checkpoint-{step}")
    temporary = target + ".tmp"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_folder(temporary, target)
        if args.checkpoints_total_limit is not None:
            existing = sorted_checkpoints(args.output_dir)
            for old in existing[: max(0, len(existing) - args.checkpoints_total_limit)]:
                shutil.rmtree(old, ignore_errors=True)


def append_jsonl(path: str, record: Dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def truncate_history(path: str, step: int) -> None:
    """Drop log lines past the resumed step, so a resumed run has no duplicate steps."""
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as handle:
        kept = [line for line in handle if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(kept))


def build_pipeline(
    unet, objective: DAKTerObjective, class_names, balance: Balance, input_normalization: Optional[dict] = None
) -> DAKTerPipeline:
    return DAKTerPipeline(
        input_normalization=input_normalization,
        unet=unet,
        scheduler=objective.sampling_scheduler(),
        balancing_factor=balance.b,
        class_names=class_names,
        label_loss=objective.label_loss,
        label_encoding=objective.label_encoding,
        image_prediction_type=objective.image_prediction_type,
        balance_resolution=balance.resolution,
    )


def save_pipeline_with_card(pipeline: DAKTerPipeline, directory: str, write_card) -> None:
    """Pipeline and model card into a temporary folder, then swapped in whole."""
    temporary = directory + ".tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    pipeline.save_pretrained(temporary)
    write_card(temporary)
    replace_folder(temporary, directory)
