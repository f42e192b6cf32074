"""Model card (README.md with Hub metadata) of a trained student: its data, arm and test metrics."""

from __future__ import annotations

import dataclasses
import json
import os

import yaml

from dakter_hf.students.metrics import format_table4_row
from dakter_hf.students.models import REMOTE_CODE_FAMILIES, input_channels, model_class, student_family
from dakter_hf.utils.files import atomic_write_text


ARM_TEXT = {
    "real": "real data only",
    "hard": "real + generated data, generated samples with their argmax labels (CE + Dice; the paper's 'DAKTer "
    "without KD')",
    "dakter": "real + generated data with the DAKTer knowledge-transfer loss (KD on the soft labels + CE + Dice)",
}

CARD = """---
{metadata}---

# {title}

A `{architecture}` ({student}, {parameters:.2f} M parameters) for SAR oil-spill segmentation,
trained with dakter-hf's `DAKTerTrainer` on {arm}.

| | |
|---|---|
| real training data | `{real}` (split `{train_split}`, {num_real} images) |
| generated data | {generated} |
| teacher | {teacher} |
| classes | {class_list} |
| input | {channels} channel(s), {resolution}x{resolution} px, scaled as {scaling} |
| loss | CE x {ce_weight} + Dice x {dice_weight}{boundary} on real samples; {generated_loss} |
| training | {steps} steps, {epochs:.1f} epochs, lr {lr}, batch {batch} per device, seed {seed} |
| initial weights | {init} |

## Test metrics ({test_split})

{metrics}

## Use

```python
from transformers import AutoImageProcessor, {auto_class}

model = {auto_class}.from_pretrained("{repo}"{remote})
processor = AutoImageProcessor.from_pretrained("{repo}")
```

or `dakter segment --model {repo} scene.tif --out masks/` for scenes of any size (tiled).

## Arguments

```json
{arguments}
```
"""


def write_student_card(directory: str, model, args, training, class_names, samples, state, test_result) -> str:
    """Write README.md next to the saved student."""

    family = student_family(args.student)
    architecture = model_class(family).__name__
    auto_class = (
        "Mask2FormerForUniversalSegmentation" if family == "mask2former" else "AutoModelForSemanticSegmentation"
    )
    num_generated = int(samples.is_generated.sum())
    num_real = len(samples) - num_generated
    id2label = dict(enumerate(class_names))
    loss = args.loss_config()
    if args.mode == "real":
        generated_loss = "no generated samples"
    else:
        terms = [f"KD x {loss.kd_weight} (T = {loss.temperature:g})"] if loss.kd_weight else []
        if loss.generated_ce:
            terms.append(f"CE x {loss.ce_weight} against the argmax")
        terms.append(f"Dice x {loss.dice_weight} ({loss.generated_dice_target} targets)")
        if loss.boundary_weight:
            terms.append(f"boundary x {loss.boundary_weight:g} (argmax edges)")
        generated_loss = "generated samples: " + " + ".join(terms)
    if args.teacher:
        generated_loss += f"; real samples also KD x {loss.kd_weight} against the teacher"
    metrics_table = format_table4_row(test_result, id2label) if test_result else "Not evaluated (`--test_split none`)."
    metadata = {
        "library_name": "transformers",
        "license": "apache-2.0",
        "pipeline_tag": "image-segmentation",
        "tags": ["dakter", "sar", "oil-spill", "knowledge-distillation", "remote-sensing", "image-segmentation"],
        "dakter": {
            "student": args.student,
            "mode": args.mode,
            "real": args.real,
            "generated": list(args.generated),
            "scale": args.scale if args.generated else None,
            "num_real_images": num_real,
            "num_generated_images": num_generated,
            "class_names": list(class_names),
            "resolution": args.resolution,
        },
    }
    if test_result:
        metadata["model-index"] = [
            {
                "name": os.path.basename(os.path.abspath(directory)),
                "results": [
                    {
                        "task": {"type": "image-segmentation"},
                        "dataset": {"name": args.real, "type": "sar-oil-spill", "split": args.test_split},
                        "metrics": [
                            {"type": "mean_iou", "value": round(float(test_result["mean_iou"]), 4)},
                            {"type": "f1", "value": round(float(test_result["mean_f1"]), 4), "name": "mean F1"},
                        ],
                    }
                ],
            }
        ]
    title = args.card_name or f"{args.student} student, {args.mode} arm"
    text = CARD.format(
        metadata=yaml.safe_dump(metadata, sort_keys=False),
        title=title,
        architecture=architecture,
        student=args.student,
        parameters=model.num_parameters() / 1e6,
        arm=ARM_TEXT[args.mode]
        + (" and a teacher's soft labels on the real images (teacher-KD baseline)" if args.teacher else ""),
        real=args.real,
        train_split=args.train_split,
        num_real=num_real,
        generated=", ".join(f"`{g}`" for g in args.generated) + f" ({num_generated} rows = {args.scale:g} x real)"
        if args.generated
        else "none",
        teacher=f"`{args.teacher}`" if args.teacher else "none",
        class_list=", ".join(f"{i} = {n}" for i, n in id2label.items()),
        channels=input_channels(model),
        resolution=args.resolution,
        scaling="pixel / 127.5 - 1",
        ce_weight=loss.ce_weight,
        dice_weight=loss.dice_weight,
        generated_loss=generated_loss,
        boundary=f" + boundary (1 - BF1 of the mask edges) x {loss.boundary_weight:g}" if loss.boundary_weight else "",
        steps=state.global_step,
        epochs=state.epoch or 0.0,
        lr=training.learning_rate,
        batch=training.per_device_train_batch_size,
        seed=training.seed,
        init=f"`{args.student_weights}`" if args.student_weights else "random (from the config; no download)",
        test_split=args.test_split,
        metrics=metrics_table,
        auto_class=auto_class,
        repo=training.hub_model_id or directory,
        remote=", trust_remote_code=True" if family in REMOTE_CODE_FAMILIES else "",
        arguments=json.dumps(dataclasses.asdict(args), indent=2, default=str),
    )
    return atomic_write_text(os.path.join(directory, "README.md"), text)
