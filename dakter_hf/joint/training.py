"""Train the joint image + label diffusion model (DAKTer stage 1 / stage 2) with Accelerate.

`training/train_joint.py` is the script users launch; the work happens here so that
tests, benchmarks and the CLI run the very same loop. This module holds `train`: the
claim of the output folder and the loop. Its parts live beside it: the arguments
(`arguments.py`), the data order (`batching.py`), b (`balance.py`), checkpoints, history
and the final pipeline (`checkpoints.py`), and the logged sample grids (`samples.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from typing import List, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, broadcast_object_list, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from dakter_hf.data.features import class_names_of
from dakter_hf.data.raster import normalization_for
from dakter_hf.data.sources import load_source, source_path
from dakter_hf.errors import FolderError
from dakter_hf.joint.arguments import JointTrainingArguments
from dakter_hf.joint.balance import resolve_balancing_factor
from dakter_hf.joint.batching import BatchPlan, micro_batches
from dakter_hf.joint.card import write_model_card
from dakter_hf.joint.checkpoints import (
    append_jsonl,
    build_pipeline,
    resume,
    save_checkpoint,
    save_pipeline_with_card,
    truncate_history,
)
from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.joint.samples import log_samples
from dakter_hf.joint.speed import adamw, apply_model_options, enable_tf32, resolve_mixed_precision
from dakter_hf.joint.unet import make_joint_unet
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline, has_label_timestep
from dakter_hf.utils.devices import no_accelerator
from dakter_hf.utils.files import atomic_write_json
from dakter_hf.utils.hub import push_folder
from dakter_hf.utils.ownership import (
    FolderLock,
    agree_on_refusal,
    claim_folder,
    dataset_fingerprint,
    folder_fingerprint,
    remove_leftovers,
)


logger = logging.getLogger(__name__)


def check_init_options(args: JointTrainingArguments, init_pipeline: DAKTerPipeline, class_names: List[str]) -> None:
    """Stage 2 must continue stage 1's objective: same classes, labels, parameterisation, schedule."""
    config, schedule = init_pipeline.config, init_pipeline.scheduler.config
    expected = {
        "classes": (list(config.class_names), class_names),
        "--label_loss": (config.label_loss, args.label_loss),
        "--label_encoding": (config.label_encoding, args.label_encoding),
        "--image_prediction": (config.image_prediction_type, args.image_prediction),
        "--zero_terminal_snr": (bool(schedule.rescale_betas_zero_snr), bool(args.zero_terminal_snr)),
        "--num_train_timesteps": (schedule.num_train_timesteps, args.num_train_timesteps),
    }
    conflicts = [f"{name}: {was!r} in stage 1, {now!r} now" for name, (was, now) in expected.items() if was != now]
    if conflicts:
        raise ValueError(
            f"--init_from {args.init_from} was trained differently; pass matching options ({'; '.join(conflicts)})"
        )


def unet_downsampling(unet) -> int:
    return 2 ** (len(unet.config.down_block_types) - 1)


def _make_unet(args: JointTrainingArguments, init_pipeline: Optional[DAKTerPipeline], num_classes: int):
    """Stage 1's UNet for stage 2, else a new one from the preset (the seed fixes its initial weights)."""
    set_seed(args.seed)
    if init_pipeline is not None:
        unet = init_pipeline.unet
        unet.register_to_config(sample_size=args.resolution)
        if args.independent_label_timestep > 0 and not has_label_timestep(unet):
            raise ValueError(
                f"--independent_label_timestep needs a UNet with a label-timestep embedding; --init_from "
                f"{args.init_from} has none (it was trained with --independent_label_timestep 0)"
            )
    else:
        overrides = json.loads(args.unet_config) if args.unet_config else {}
        if args.independent_label_timestep > 0:
            overrides.setdefault("class_embed_type", "timestep")
        unet = make_joint_unet(
            num_classes, args.unet_preset, sample_size=args.resolution, label_encoding=args.label_encoding, **overrides
        )
    if args.resolution % unet_downsampling(unet):
        raise ValueError(
            f"--resolution {args.resolution} must be a multiple of {unet_downsampling(unet)} for this UNet "
            f"({len(unet.config.down_block_types)} down blocks)"
        )
    return unet


# ----------------------------------------------------------------------------- main
def train(args: JointTrainingArguments) -> str:
    """Run training; returns the directory of the saved pipeline.

    The output folder is claimed before anything is written into it (see `ownership.py`):
    a used folder is continued only with `--resume_from_checkpoint` and the same settings
    and data, replaced only with `--overwrite`, and held by one process at a time.
    """
    with contextlib.ExitStack() as hold:
        return _train(args, hold)


# how long and how visibly a run goes, not what it computes: a resumed run may change them
# (a longer --max_train_steps extends a run; with a decaying lr schedule that is your choice)
RUN_CONTROL = {
    "output_dir",
    "resume_from_checkpoint",
    "max_train_minutes",
    "max_train_steps",
    "data_cache",
    "channels_last",
    "torch_compile",
    "torch_compile_mode",
    "overwrite",
    "logging_steps",
    "report_to",
    "push_to_hub",
    "hub_model_id",
    "hub_private",
    "dataloader_num_workers",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "sample_steps",
    "num_sample_images",
    "sample_inference_steps",
}


def _claim_output_dir(accelerator, args: JointTrainingArguments, train_split, hold: contextlib.ExitStack) -> None:
    """Claim --output_dir for this run (main process), take its lock, clear an interrupted run's leftovers."""

    refusal = None
    if accelerator.is_main_process:
        settings = {k: v for k, v in dataclasses.asdict(args).items() if k not in RUN_CONTROL}
        if source_path(args.data):
            # ./d and d are one input
            settings["data"] = os.path.abspath(args.data) if os.path.exists(args.data) else args.data
        inputs = {
            "data": dataset_fingerprint(train_split),
            "init_from": folder_fingerprint(args.init_from) if args.init_from else None,
        }
        lock = FolderLock(args.output_dir, flag="--output_dir")
        try:
            lock.ensure_free()
            claim_folder(
                args.output_dir,
                "train-joint",
                settings,
                inputs,
                input_paths=[source_path(args.data), args.init_from],
                overwrite=args.overwrite,
                allow_resume=bool(args.resume_from_checkpoint),
                flag="--output_dir",
                resume_hint="pass --resume_from_checkpoint latest to continue it, or --overwrite to start a fresh run",
            )
            hold.enter_context(lock)
            remove_leftovers(
                args.output_dir,
                {
                    "checkpoint-*.tmp": "half-saved checkpoint",
                    "pipeline.tmp": "half-saved pipeline",
                    "*.tmp": "half-written file",
                },
            )
        except (FolderError, ValueError) as error:
            refusal = error
    agree_on_refusal(refusal, accelerator.num_processes, broadcast_object_list)
    accelerator.wait_for_everyone()


def _train(args: JointTrainingArguments, hold: contextlib.ExitStack) -> str:
    report_to = None if (args.report_to in (None, "none")) else args.report_to
    accelerator = Accelerator(
        cpu=no_accelerator(),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=resolve_mixed_precision(args.mixed_precision),
        log_with=report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")
        ),
    )
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
    )

    class_list = [c.strip() for c in args.classes.split(",")] if args.classes else None
    normalization = normalization_for(args.data, args.intensity, args.clip_percentiles)  # recorded in the pipeline
    with accelerator.main_process_first():  # the main process builds the Arrow cache, the others reuse it
        data = load_source(
            args.data,
            sensor=args.sensor,
            split=args.split,
            class_names=class_list,
            num_classes=args.num_classes,
            size=args.resolution,
            seed=args.seed,
            normalization=normalization,
        )
    train_split = data[args.split]
    class_names = class_names_of(train_split)
    init_pipeline = DAKTerPipeline.from_pretrained(args.init_from) if args.init_from else None
    if init_pipeline is not None:
        check_init_options(args, init_pipeline, class_names)
    balance = [resolve_balancing_factor(args, train_split, init_pipeline) if accelerator.is_main_process else None]
    balance = broadcast_object_list(balance)[0] if accelerator.num_processes > 1 else balance[0]
    objective = DAKTerObjective(
        num_classes=len(class_names),
        balancing_factor=balance.b,
        label_loss=args.label_loss,
        label_encoding=args.label_encoding,
        image_prediction_type=args.image_prediction,
        snr_gamma=args.snr_gamma,
        independent_label_timestep=args.independent_label_timestep,
        zero_terminal_snr=args.zero_terminal_snr,
        num_train_timesteps=args.num_train_timesteps,
    )
    unet = _make_unet(args, init_pipeline, len(class_names))
    logger.info("b = %.4f (%s); classes %s; %d training images", balance.b, balance.how, class_names, len(train_split))

    global_batch = args.train_batch_size * accelerator.num_processes
    if len(train_split) < global_batch:
        raise ValueError(
            f"the training split has {len(train_split)} images, fewer than one global batch ({global_batch})"
        )
    ema = (
        EMAModel(
            unet.parameters(),
            decay=args.ema_decay,
            use_ema_warmup=True,
            power=args.ema_power,
            model_cls=type(unet),
            model_config=unet.config,
        )
        if args.use_ema
        else None
    )
    enable_tf32()
    unet.to(accelerator.device)  # fused AdamW needs the parameters where they will train
    for option, state in apply_model_options(unet, args.channels_last, args.torch_compile, args.torch_compile_mode):
        logger.info("%s: %s", option, state)
    optimizer = adamw(
        unet.parameters(),
        accelerator.device,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    _claim_output_dir(accelerator, args, train_split, hold)
    global_step = resume(accelerator, args)
    first_step = global_step
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        atomic_write_json(os.path.join(args.output_dir, "training_args.json"), dataclasses.asdict(args))
        truncate_history(os.path.join(args.output_dir, "loss_history.jsonl"), global_step)
        if report_to:
            accelerator.init_trackers(
                "dakter-joint",
                config={k: v for k, v in dataclasses.asdict(args).items() if isinstance(v, (int, float, str, bool))},
            )

    plan = BatchPlan(
        len(train_split),
        args.train_batch_size,
        accelerator.num_processes,
        accelerator.process_index,
        args.seed,
        start=global_step * args.gradient_accumulation_steps,
    )
    batches = micro_batches(
        args,
        train_split,
        plan,
        accelerator,
        objective,
        first_micro_step=global_step * args.gradient_accumulation_steps,
    )
    progress = tqdm(
        total=args.max_train_steps,
        initial=global_step,
        desc="joint training",
        disable=not accelerator.is_local_main_process,
    )
    unet.train()
    start = time.time()
    while global_step < args.max_train_steps:
        for accumulation_index in range(args.gradient_accumulation_steps):
            # micro-batch global_step * accumulation + accumulation_index
            images, masks, timesteps, noise = next(batches)
            with accelerator.accumulate(unet):
                with accelerator.autocast():
                    out = objective(unet, images, masks, timesteps=timesteps, noise=noise)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(unet.parameters())
        global_step += 1
        progress.update(1)
        if global_step % args.logging_steps == 0 or global_step == args.max_train_steps:
            images_done = (global_step - first_step) * global_batch * args.gradient_accumulation_steps
            logs = {
                "loss": out.loss.item(),
                "image_loss": out.image_loss.item(),
                "label_loss": out.label_loss.item(),
                "lr": lr_scheduler.get_last_lr()[0],
                "images_per_second": images_done / max(time.time() - start, 1e-9),
            }
            progress.set_postfix(loss=f"{logs['loss']:.4f}")
            accelerator.log(logs, step=global_step)
            if accelerator.is_main_process:
                append_jsonl(os.path.join(args.output_dir, "loss_history.jsonl"), {"step": global_step, **logs})
        out_of_time = _everyone_out_of_time(accelerator, args.max_train_minutes, start)
        if global_step % args.checkpointing_steps == 0 or global_step == args.max_train_steps or out_of_time:
            save_checkpoint(accelerator, args, global_step)
        if args.sample_steps and global_step % args.sample_steps == 0 and accelerator.is_main_process and report_to:
            log_samples(accelerator, unet, ema, objective, class_names, balance, args, global_step)
        if out_of_time:
            logger.info("time budget of %.1f min reached at step %d", args.max_train_minutes, global_step)
            break
    progress.close()
    batches.close()

    accelerator.wait_for_everyone()
    final_dir = os.path.join(args.output_dir, "pipeline")
    if accelerator.is_main_process:
        run = {
            "steps": global_step,
            "batch": global_batch * args.gradient_accumulation_steps,
            "num_train_images": len(train_split),
        }
        final_unet = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.store(final_unet.parameters())
            ema.copy_to(final_unet.parameters())
        pipeline = build_pipeline(final_unet, objective, class_names, balance, normalization.to_dict())
        save_pipeline_with_card(
            pipeline,
            final_dir,
            lambda folder: write_model_card(folder, args, class_names, balance, objective, final_unet, run, final_dir),
        )
        if report_to:
            log_samples(accelerator, final_unet, None, objective, class_names, balance, args, global_step)
        if ema is not None:
            ema.restore(final_unet.parameters())
        if args.push_to_hub:
            repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
            push_folder(final_dir, repo_id, private=args.hub_private, repo_type="model")
    accelerator.end_training()
    return final_dir


def _everyone_out_of_time(accelerator, budget_minutes: Optional[float], start: float) -> bool:
    """All processes take the same decision (one process stopping alone would hang the others)."""
    if budget_minutes is None:
        return False
    if accelerator.num_processes == 1:  # no device tensor: a .item() every step would stall the GPU queue
        return (time.time() - start) / 60 >= budget_minutes
    flag = torch.tensor(float((time.time() - start) / 60 >= budget_minutes), device=accelerator.device)
    flag = accelerator.reduce(flag, reduction="sum")
    return bool(flag.item() > 0)
