"""Tiny joint-training runs for the tests: `simulate:16` scenes at 16 px, the `tiny` UNet, a few steps."""

from dakter_hf.joint.arguments import JointTrainingArguments


# Seconds on a CPU: 16 simulated scenes of 16 px, batch 4, two steps, no checkpoint before step 100.
BASE = {
    "data": "simulate:16",
    "num_classes": 2,
    "resolution": 16,
    "unet_preset": "tiny",
    "train_batch_size": 4,
    "report_to": "none",
    "max_train_steps": 2,
    "checkpointing_steps": 100,
    "logging_steps": 1,
    "learning_rate": 1e-3,
    "sample_inference_steps": 2,
}


def make_args(output_dir, **overrides) -> JointTrainingArguments:
    """`BASE` writing to `output_dir`, with `overrides`."""
    return JointTrainingArguments(**{**BASE, "output_dir": str(output_dir), **overrides})
