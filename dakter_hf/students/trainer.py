"""`DAKTerTrainer`: a `transformers.Trainer` whose loss is the routed DAKTer student loss.

Use it as a Trainer, with `remove_unused_columns=False` (the batches carry soft labels and
flags the model's `forward` does not take) and batches from `students.data`:

    trainer = DAKTerTrainer(model=student, args=args, train_dataset=samples,
                            data_collator=student_collate, loss_config=StudentLossConfig())

Gradient accumulation: the Trainer counts the label pixels of all micro-batches of one
optimizer step (`num_items_in_batch`). Each sample contributes its per-pixel mean loss
times its pixel count, divided by that total, so k micro-batches of n samples give the
same gradient as one batch of k * n (tested), and the logged loss does not depend on k.

Evaluation returns argmax class maps at label size instead of logits, so with
`batch_eval_metrics=True` nothing grows with the evaluation set.

Resumption is exact: a checkpoint is written into `checkpoint-N.tmp/` and renamed to
`checkpoint-N/` once complete (`students/checkpoints.py`), and `augment=True` flips / turns
each sample by a draw from (seed, step, process, micro-batch), not from the global RNG (the
data loader fetches a batch ahead, so draws made there fall before the checkpoint that
precedes their step). Dropout draws from the global RNG, which the Trainer restores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import defaultdict
from typing import Dict, Optional

import torch
from transformers import Trainer

from dakter_hf.data.transforms import dihedral, draw_dihedral
from dakter_hf.students.checkpoints import STAGING_SUFFIX, rotate_checkpoints
from dakter_hf.students.losses import StudentLossConfig, resize_logits, student_loss
from dakter_hf.students.models import input_channels, student_logits, to_model_input
from dakter_hf.utils.files import atomic_write_text, read_json


class DAKTerTrainer(Trainer):
    """Trainer with the DAKTer student loss (`losses.student_loss`) for any student of `models`."""

    def __init__(self, *args, loss_config: Optional[StudentLossConfig] = None, augment: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.augment = augment  # random flips / rot90 per sample (`_augmented`); the dataset then augments nothing
        if self.args.remove_unused_columns:
            raise ValueError(
                "DAKTerTrainer needs TrainingArguments(remove_unused_columns=False): batches carry soft labels and "
                "sample flags"
            )
        self.loss_config = loss_config or StudentLossConfig()
        # compute_loss normalises by num_items_in_batch itself, so the Trainer must count and pass it
        self.model_accepts_loss_kwargs = True
        self._channels = input_channels(self.accelerator.unwrap_model(self.model))
        self._terms: Dict[str, list] = defaultdict(list)
        self._staging: Optional[str] = None  # where _save_checkpoint writes while it runs
        self._micro, self._micro_step = 0, None  # micro-batch of the step being augmented

    def _loss_terms(self, model, inputs):
        logits = student_logits(model, to_model_input(inputs["pixel_values"], self._channels))
        out = student_loss(
            logits,
            inputs["labels"],
            inputs.get("soft_labels"),
            inputs.get("has_soft_label"),
            inputs.get("is_generated"),
            self.loss_config,
        )
        return logits, out

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        logits, out = self._loss_terms(model, inputs)
        if num_items_in_batch is None:
            loss = out.per_sample.mean()
        else:
            pixels = inputs["labels"][0].numel()
            loss = out.per_sample.sum() * pixels / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        if model.training:
            self._record(out, inputs)
        return (loss, {"logits": logits}) if return_outputs else loss

    def _record(self, out, inputs) -> None:
        """Per-term means for the logs: CE, Dice over all samples; KD over those with soft labels."""
        self._terms["loss_ce"].append(out.ce.detach().mean())
        self._terms["loss_dice"].append(out.dice.detach().mean())
        if self.loss_config.boundary_weight > 0:
            self._terms["loss_boundary"].append(out.boundary.detach().mean())
        soft = inputs.get("has_soft_label")
        if soft is not None and bool(soft.any()):
            self._terms["loss_kd"].append(out.kd.detach()[soft.bool()].mean())
        generated = inputs.get("is_generated")
        if generated is not None:
            self._terms["generated_fraction"].append(generated.float().mean())

    def log(self, logs: Dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._terms:
            for name, values in self._terms.items():
                logs[name] = round(float(torch.stack(values).mean()), 6)
            self._terms.clear()
        super().log(logs, *args, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Weights through `from_pretrained`, which maps renamed keys (SegFormer's and Mask2Former's
        saved names differ from their module names in transformers 5); the Trainer's own
        `load_state_dict(strict=False)` would skip them all and resume from the initial weights."""
        model = model if model is not None else self.model
        target = self.accelerator.unwrap_model(model)
        loaded = type(target).from_pretrained(resume_from_checkpoint)
        target.load_state_dict(loaded.state_dict(), strict=True)

    # ---- checkpoints written whole: checkpoint-N.tmp/checkpoint-N, renamed to checkpoint-N when complete
    def _get_output_dir(self, trial) -> str:
        return self._staging if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's save into a staging folder, moved into place once complete; then the rotation."""
        run_dir = super()._get_output_dir(trial)
        name = f"checkpoint-{self.state.global_step}"
        staging, target = os.path.join(run_dir, name + STAGING_SUFFIX), os.path.join(run_dir, name)
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._staging = staging
        try:
            super()._save_checkpoint(model, trial)  # its rotation sees only the staging folder
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()  # every process has written its part (RNG states)
        if not self.args.should_save:
            return
        best = self.state.best_model_checkpoint
        if best and os.path.dirname(os.path.normpath(best)) == staging:  # it named the staged path: name the final one
            self.state.best_model_checkpoint = os.path.join(run_dir, os.path.basename(os.path.normpath(best)))
            self.state.save_to_json(os.path.join(staging, name, "trainer_state.json"))
        if os.path.exists(target):  # an incomplete one of an older run, or a step saved again
            shutil.rmtree(target)
        os.replace(os.path.join(staging, name), target)
        shutil.rmtree(staging, ignore_errors=True)
        keep = [self.state.best_model_checkpoint, target]
        rotate_checkpoints(run_dir, self.args.save_total_limit, keep=keep, full=not self.args.save_only_model)

    def save_metrics(self, split, metrics, combined=True) -> None:
        """As the Trainer's, but each file written whole: a rerun merges into `all_results.json`, so one cut
        by a kill would fail every later rerun; an unreadable one is started again."""
        if not self.is_world_process_zero():
            return
        folder = self.args.output_dir
        atomic_write_text(os.path.join(folder, f"{split}_results.json"), json.dumps(metrics, indent=4, sort_keys=True))
        if combined:
            path = os.path.join(folder, "all_results.json")
            try:
                merged = read_json(path) or {}
            except ValueError:
                merged = {}
            merged.update(metrics)
            atomic_write_text(path, json.dumps(merged, indent=4, sort_keys=True))

    # ---- augmentation as a function of the step: a resumed run draws what the uninterrupted run drew
    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.augment:
            inputs = self._augmented(inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def _augmented(self, inputs):
        """Each sample flipped / turned (image, mask and soft label alike) by a draw from (seed, step,
        process, micro-batch). Drawn in the dataset, from the global RNG, the transforms of the batch that
        the data loader had already fetched when a checkpoint was saved would differ after a resume."""
        step = self.state.global_step
        self._micro = self._micro + 1 if self._micro_step == step else 0
        self._micro_step = step
        key = f"{self.args.seed}/{step}/{self.args.process_index}/{self._micro}".encode()
        generator = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
        draws = [draw_dihedral(generator) for _ in range(len(inputs["pixel_values"]))]
        out = dict(inputs)
        for name in ("pixel_values", "labels", "soft_labels"):
            if name in inputs:
                out[name] = torch.stack([dihedral(t, k, flip) for t, (k, flip) in zip(inputs[name], draws)])
        return out

    def prediction_step(self, model, inputs, prediction_loss_only: bool, ignore_keys=None):
        """(loss, argmax class map at label size, labels): no logits are kept."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            logits, out = self._loss_terms(model, inputs)
            loss = out.per_sample.mean().detach()
        if prediction_loss_only:
            return loss, None, None
        labels = inputs["labels"]
        predictions = resize_logits(logits, labels.shape[-2:]).argmax(1)
        return loss, predictions, labels
