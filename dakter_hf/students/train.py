"""Train a segmentation student on real + generated data (`training/train_student.py` launches this).

    accelerate launch training/train_student.py --real sos:/data/SOS --sensor palsar \
        --generated gen/sos-palsar --scale 1.0 --mode dakter --student segformer-b3 --output_dir runs/student

Modes: `real` (real data only), `hard` (real + generated with argmax labels and CE: the
paper's "without KD"), `dakter` (real + generated with the KD loss). `--teacher DIR` adds
the teacher-KD baseline (Table 2): a trained student's soft labels on the real images.

At the end the folder holds the student (`save_pretrained`), its image processor, its
test-split metrics (`test_results.json`) and a model card naming its data, arm and metrics.
Nothing is evaluated on the test split during training (no model selection on test); use
`--validation_fraction` with `--eval_strategy steps|epoch` to watch a held-out part of train.
With a held-out part, the test metrics also hold `temperature_scaling`: T fitted by NLL on that
part (never on test) and the test calibration (ECE, Brier, NLL) after dividing the logits by T.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from accelerate.utils import broadcast_object_list
from transformers import TrainerCallback, TrainingArguments

from dakter_hf.data.features import class_names_of
from dakter_hf.data.raster import Normalization, normalization_for
from dakter_hf.data.sources import load_source, source_path
from dakter_hf.errors import DataError, FolderError
from dakter_hf.students.card import write_student_card
from dakter_hf.students.checkpoints import (
    LATEST,
    LEFTOVERS,
    complete_checkpoints,
    remove_superseded,
    resume_checkpoint,
)
from dakter_hf.students.data import (
    build_eval_samples,
    build_training_samples,
    check_generated_columns,
    generated_rows,
    load_generated,
    student_collate,
)
from dakter_hf.students.inference import evaluate_student, fit_temperature
from dakter_hf.students.losses import BOUNDARY_WEIGHT, KD_TEMPERATURE, StudentLossConfig
from dakter_hf.students.metrics import make_batch_compute_metrics, to_json
from dakter_hf.students.models import STUDENT_NAMES, build_student, make_image_processor
from dakter_hf.students.teacher import teacher_soft_labels
from dakter_hf.students.trainer import DAKTerTrainer
from dakter_hf.utils.arguments import RepeatableList, parse_arguments
from dakter_hf.utils.files import atomic_write_json
from dakter_hf.utils.ownership import (
    FolderLock,
    agree_on_refusal,
    check_generated,
    check_output_path,
    claim_folder,
    dataset_fingerprint,
    folder_fingerprint,
    remove_leftovers,
)


logger = logging.getLogger(__name__)
MODES = ("real", "hard", "dakter")


def _not_finite(word: str):
    raise ValueError(f"{word} is not a finite number")  # json.loads reads NaN and Infinity otherwise


def _finite(text: str) -> float:
    if not math.isfinite(float(text)):  # 1e999
        _not_finite(text)
    return float(text)


@dataclass
class StudentArguments:
    """What to train on and how; every field is a flag of train_student.py and a --config key."""

    real: str = field(
        default="simulate:64",
        metadata={"help": "real data: sos:ROOT, osd:ROOT, folder:ROOT, simulate:N or a saved dataset dir"},
    )
    generated: List[str] = field(
        default_factory=list,
        metadata={
            "help": "generated dataset dir or Hub id (repeatable; on the command line it replaces the config file's "
            "list)",
            "action": RepeatableList,
        },
    )
    scale: float = field(
        default=1.0, metadata={"help": "generated rows as a multiple of the real training set (paper: 0.5, 1, 1.5, 2)"}
    )
    mode: str = field(
        default="dakter",
        metadata={"help": "real (real only), hard (generated with argmax labels + CE), dakter (generated with KD)"},
    )
    teacher: Optional[str] = field(
        default=None,
        metadata={"help": "a trained student dir: its soft labels on the real images give the teacher-KD baseline"},
    )
    student: str = field(
        default="segformer-b3", metadata={"help": f"one of {', '.join(STUDENT_NAMES)} (paper: segformer-b3)"}
    )
    student_weights: Optional[str] = field(
        default=None, metadata={"help": "pretrained weights (Hub id or local path); default: random init"}
    )
    student_config: Optional[str] = field(
        default=None,
        metadata={"help": "JSON dict of config overrides for the random-init student (e.g. a smaller depth)"},
    )
    resolution: int = field(default=256, metadata={"help": "student input size (SOS and OSD patches: 256)"})
    sensor: str = field(default="palsar", metadata={"help": "SOS sensor: palsar or sentinel"})
    classes: Optional[str] = field(default=None, metadata={"help": "comma-separated class names for folder:ROOT"})
    num_classes: int = field(default=2, metadata={"help": "classes of simulate:N"})
    intensity: str = field(
        default="linear",
        metadata={"help": "16-bit/float images of folder:ROOT: linear (as stored) or db (linear power to dB)"},
    )
    clip_percentiles: Optional[str] = field(
        default=None,
        metadata={"help": "LOW,HIGH percentiles stretched to 0..255 (default: 8-bit as stored, other depths 1,99)"},
    )
    train_split: str = field(default="train", metadata={"help": "real training split"})
    test_split: Optional[str] = field(default="test", metadata={"help": "split evaluated at the end (none: skip)"})
    validation_fraction: float = field(
        default=0.0,
        metadata={"help": "hold out this fraction of the real training split for evaluation during training"},
    )
    temperature: float = field(default=KD_TEMPERATURE, metadata={"help": "KD temperature T (paper: 2)"})
    ce_weight: float = field(default=1.0, metadata={"help": "lambda_ce (paper: 1)"})
    kd_weight: float = field(default=0.1, metadata={"help": "lambda_kd (paper: 0.1)"})
    dice_weight: float = field(default=0.5, metadata={"help": "lambda_dice (paper: 0.5)"})
    generated_ce: bool = field(
        default=True,
        metadata={"help": "also CE against the argmax for generated samples (false: Eq. 5 read literally)"},
    )
    boundary_weight: Optional[float] = field(
        default=None,
        metadata={
            "help": (
                "weight of CBD-Net's boundary term (1 - boundary F1 of the mask edges; generated samples: the argmax "
                f"edges); default {BOUNDARY_WEIGHT:g} (the reference's) for cbdnet-resnet34, 0 for the other students"
            )
        },
    )
    generated_dice_target: str = field(
        default="hard",
        metadata={
            "help": "Dice target of generated samples: hard (argmax; the KD arm then differs from --mode hard by the "
            "KD term only) or soft (probabilities)"
        },
    )
    augment: bool = field(
        default=True, metadata={"help": "random flips / rot90, the same for image, mask and soft label"}
    )
    max_train_minutes: Optional[float] = field(
        default=None, metadata={"help": "stop training after this much wall time (then save and evaluate)"}
    )
    card_name: Optional[str] = field(
        default=None, metadata={"help": "title of the model card (default: student, mode and data)"}
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "replace what --output_dir holds (never an input); without it a used folder is only continued "
            "with the same settings"
        },
    )

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {MODES}, got {self.mode!r}")
        if self.student not in STUDENT_NAMES:
            raise ValueError(f"--student must be one of {', '.join(STUDENT_NAMES)}, got {self.student!r}")
        if self.mode != "real" and not self.generated:
            raise ValueError(f"--mode {self.mode} needs at least one --generated dataset")
        if self.mode == "real" and self.generated:
            raise ValueError("--mode real trains on real data only; drop --generated or choose --mode hard|dakter")
        if not self.scale > 0:
            raise ValueError(f"--scale must be > 0, got {self.scale}")
        if self.resolution < 16 or self.resolution % 4:
            raise ValueError(f"--resolution must be a multiple of 4 and >= 16, got {self.resolution}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"--validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.max_train_minutes is not None and not self.max_train_minutes > 0:
            raise ValueError(f"--max_train_minutes must be > 0, got {self.max_train_minutes}")
        if self.student_config is not None:
            try:
                if not isinstance(
                    json.loads(self.student_config, parse_constant=_not_finite, parse_float=_finite), dict
                ):
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"--student_config must be a JSON object of config fields (finite numbers), got "
                    f"{self.student_config!r}"
                ) from None
            if self.student_weights:
                raise ValueError(
                    "--student_config applies to random-init students; it cannot change --student_weights"
                )
        self.loss_config()  # validates temperature, weights and the Dice target

        Normalization.from_options(self.intensity, self.clip_percentiles)  # validates --intensity / --clip_percentiles

    def loss_config(self) -> StudentLossConfig:
        kd_weight = self.kd_weight if (self.mode == "dakter" or self.teacher) else 0.0
        dice_target = self.generated_dice_target if self.mode == "dakter" else "hard"
        boundary = self.boundary_weight
        if boundary is None:
            boundary = BOUNDARY_WEIGHT if self.student.startswith("cbdnet") else 0.0
        return StudentLossConfig(
            temperature=self.temperature,
            ce_weight=self.ce_weight,
            kd_weight=kd_weight,
            dice_weight=self.dice_weight,
            generated_ce=self.generated_ce,
            generated_dice_target=dice_target,
            boundary_weight=boundary,
        )


@dataclass
class StudentTrainingArguments(TrainingArguments):
    """transformers' TrainingArguments with the paper's defaults for students (lr 1e-4, batch 32, 400 epochs)."""

    output_dir: Optional[str] = field(
        default="outputs/dakter-student", metadata={"help": "where checkpoints, the student and its card go"}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW lr (paper: 1e-4)"})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "batch size per device (paper: 32)"})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "evaluation batch size per device"})
    num_train_epochs: float = field(default=400.0, metadata={"help": "epochs over real + generated data (paper: 400)"})
    remove_unused_columns: Optional[bool] = field(
        default=False, metadata={"help": "must stay false: batches carry soft labels"}
    )
    batch_eval_metrics: bool = field(default=True, metadata={"help": "accumulate metrics per batch (no logits held)"})
    label_names: Optional[List[str]] = field(
        default_factory=lambda: ["labels"], metadata={"help": "label keys of a batch"}
    )
    logging_steps: float = field(default=50, metadata={"help": "log every N steps"})
    save_strategy: str = field(default="steps", metadata={"help": "checkpoint strategy"})
    save_steps: float = field(default=500, metadata={"help": "checkpoint every N steps"})
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "keep at most this many checkpoints"})


def _settings(args: StudentArguments, training: TrainingArguments) -> dict:
    """What a run computes (a resumed run must match it); run-control flags are left out."""
    keep = json.loads(json.dumps(dataclasses.asdict(args), default=str))
    keep.pop("max_train_minutes")
    keep.pop("card_name")  # presentation only
    for name in (
        "learning_rate",
        "per_device_train_batch_size",
        "num_train_epochs",
        "max_steps",
        "seed",
        "gradient_accumulation_steps",
        "weight_decay",
        "lr_scheduler_type",
        "warmup_steps",
        "optim",
    ):
        keep[name] = str(getattr(training, name))
    return keep


def _claim_output_dir(args: StudentArguments, training: TrainingArguments, inputs: dict, hold):
    """Claim --output_dir (see `ownership.py`); called once every argument and input has been checked."""

    lock = FolderLock(training.output_dir, flag="--output_dir")
    if training.process_index == 0:
        lock.ensure_free()
    claim = claim_folder(
        training.output_dir,
        "train-student",
        _settings(args, training),
        inputs,
        input_paths=[source_path(args.real), *args.generated, args.teacher, args.student_weights],
        overwrite=args.overwrite and training.process_index == 0,
        flag="--output_dir",
        write=training.process_index == 0,
    )
    if training.process_index == 0 and claim.resumed and not claim.record.get("finished"):
        if not training.resume_from_checkpoint:  # like train_joint.py: a used folder is continued only when asked
            found = complete_checkpoints(training.output_dir, warn=False, full=not training.save_only_model)
            where = f"from {found[-1]}" if found else "from step 0: it holds no complete checkpoint yet"
            raise FolderError(
                f"--output_dir {training.output_dir} holds an unfinished train-student run with these settings "
                f"(interrupted?); pass --resume_from_checkpoint latest to continue it ({where}), or --overwrite to "
                "start again"
            )
    if training.process_index == 0:
        hold.enter_context(lock)
        remove_leftovers(training.output_dir, LEFTOVERS)  # what a killed run left half-written
        remove_superseded(training.output_dir, full=not training.save_only_model)
    return claim


class TimeBudget(TrainerCallback):
    """Stops training after `minutes` of wall time (the Trainer then saves as usual).

    The clock starts after the first step: one-off start-up costs (CUDA context, cuDNN
    autotuning) fall into the first student of a process and would otherwise shorten its
    training against the others (seen on a GPU with a 15-s budget: 19 steps instead of ~250).
    """

    def __init__(self, minutes: Optional[float]):
        self.minutes, self.start = minutes, None

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is None:
            self.start = time.time()
        elif self.minutes is not None and (time.time() - self.start) / 60 >= self.minutes:
            control.should_training_stop = True
            control.should_save = True
        return control


def atrous_rates_for(resolution: int) -> tuple:
    """DeepLabV3+'s rates (6, 12, 18) were set for 513 px crops; scale them to the input size."""
    return tuple(max(1, round(rate * resolution / 512)) for rate in (6, 12, 18))


def load_real(args: StudentArguments, seed: int):
    class_list = [c.strip() for c in args.classes.split(",")] if args.classes else None
    return load_source(
        args.real,
        sensor=args.sensor,
        class_names=class_list,
        num_classes=args.num_classes,
        size=args.resolution,
        seed=seed,
        normalization=input_normalization(args),
    )


def input_normalization(args: StudentArguments):
    """The pixel normalisation of the real data: the `dakter data` folder's record, else the flags."""

    return normalization_for(args.real, args.intensity, args.clip_percentiles)


def train_student(args: StudentArguments, training: TrainingArguments) -> str:
    """Train, save the student + processor + test metrics + card into `training.output_dir`; returns it.

    Rerunning a finished run with the same settings and inputs changes nothing.
    """

    # ---- every check before the first write
    if training.remove_unused_columns:
        raise ValueError("--remove_unused_columns must be false for students (batches carry soft labels)")
    if args.validation_fraction > 0 and training.eval_strategy == "no":
        raise ValueError(
            "--validation_fraction needs --eval_strategy steps or epoch (otherwise the held-out images are only lost "
            "to training)"
        )
    if training.eval_strategy != "no" and args.validation_fraction == 0:
        raise ValueError(
            "--eval_strategy needs --validation_fraction > 0: students are never selected on the test split"
        )
    real = load_real(args, training.seed)
    if args.train_split not in real:
        raise DataError(f"--real {args.real}: no split {args.train_split!r}; splits: {list(real)}")
    if args.test_split and args.test_split not in real:
        raise DataError(
            f"--real {args.real}: no split {args.test_split!r} to test on; splits: {list(real)} (or pass --test_split "
            "none)"
        )
    generated = [load_generated(spec) for spec in args.generated]
    train_split, validation_split = real[args.train_split], None
    if args.validation_fraction > 0:
        parts = train_split.train_test_split(test_size=args.validation_fraction, seed=training.seed)
        train_split, validation_split = parts["train"], parts["test"]
    class_names = class_names_of(train_split)
    id2label = dict(enumerate(class_names))
    if generated:
        generated_rows(len(train_split), generated, args.scale)  # enough generated rows for --scale
        check_generated_columns(generated, class_names, use_soft_labels=args.mode == "dakter")
    if args.teacher:
        if not os.path.isdir(args.teacher):
            raise FileNotFoundError(
                f"--teacher {args.teacher}: no such folder (expected a student saved by train_student.py)"
            )
        from transformers import AutoConfig

        from dakter_hf.students import deeplabv3plus  # noqa: F401  registers the DeepLabV3+ config

        try:
            teacher_labels = AutoConfig.from_pretrained(args.teacher).num_labels  # the weights load later, once
        except (OSError, ValueError) as error:
            raise ValueError(
                f"--teacher {args.teacher}: not a student saved by train_student.py ({' '.join(str(error).split())})"
            ) from None
        if teacher_labels != len(class_names):
            raise ValueError(
                f"--teacher {args.teacher} predicts {teacher_labels} classes; the real data has {len(class_names)} "
                f"({class_names})"
            )
    overrides = (
        {"atrous_rates": atrous_rates_for(args.resolution)}
        if args.student.startswith("deeplabv3plus") and not args.student_weights
        else {}
    )
    overrides.update(json.loads(args.student_config) if args.student_config else {})
    model = build_student(args.student, id2label, weights=args.student_weights, seed=training.seed, **overrides)
    checkpoint, full = training.resume_from_checkpoint, not training.save_only_model
    if checkpoint and checkpoint not in LATEST:
        resume_checkpoint(training.output_dir, checkpoint, full)  # a named checkpoint must exist and be complete
        if args.overwrite and os.path.realpath(checkpoint).startswith(os.path.realpath(training.output_dir) + os.sep):
            raise ValueError("--overwrite empties --output_dir, the checkpoint to resume from included; pass only one")

    inputs = {
        "real": dataset_fingerprint(train_split),
        "generated": [dataset_fingerprint(g) for g in generated],
        "teacher": folder_fingerprint(args.teacher) if args.teacher else None,
    }
    with contextlib.ExitStack() as hold:  # the claim's lock is held until the student is saved
        claim = _claim_on_every_process(args, training, inputs, hold)
        if claim.record.get("finished"):
            if training.process_index == 0:
                print(
                    f"{training.output_dir} already holds this finished student (same settings and data); "
                    "nothing to do"
                )
            return training.output_dir

        # ---- data, model, training
        teacher = None
        if args.teacher:
            with training.main_process_first(desc="teacher soft labels"):
                teacher = teacher_soft_labels(
                    args.teacher,
                    train_split,
                    os.path.join(training.output_dir, "teacher_soft_labels"),
                    write=training.process_index == 0,
                )
        samples = build_training_samples(
            train_split,
            args.resolution,
            generated=generated,
            scale=args.scale,
            use_soft_labels=args.mode == "dakter",
            teacher_soft_labels=teacher,
            augment=False,  # the trainer augments, per step (exact resumption)
        )
        logger.info(
            "%d training samples (%d real, %d generated), classes %s",
            len(samples),
            int((~samples.is_generated).sum()),
            int(samples.is_generated.sum()),
            class_names,
        )
        model.config.dakter_resolution = args.resolution
        model.config.sar_input = {
            **model.config.sar_input,
            "normalization": input_normalization(args).to_dict(),
        }  # applied again by `dakter segment`
        width, height = train_split[0]["image"].size
        model.config.dakter_pixel_scale = args.resolution / max(
            width, height
        )  # `dakter segment` resizes scenes by this
        processor = make_image_processor(model, args.resolution)
        trainer = DAKTerTrainer(
            model=model,
            args=training,
            train_dataset=samples,
            eval_dataset=build_eval_samples(validation_split, args.resolution)
            if validation_split is not None
            else None,
            data_collator=student_collate,
            processing_class=processor,
            compute_metrics=make_batch_compute_metrics(len(class_names), id2label=id2label),
            callbacks=[TimeBudget(args.max_train_minutes)],
            loss_config=args.loss_config(),
            augment=args.augment,
        )
        # latest: the newest complete checkpoint (incomplete ones are skipped with a warning)
        checkpoint = resume_checkpoint(training.output_dir, checkpoint, not training.save_only_model)
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # student + processor
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()  # trainer_state.json: the loss curve of the report
        if trainer.is_world_process_zero():
            final = trainer.accelerator.unwrap_model(trainer.model)
            test_result = None
            if args.test_split:
                test_result = evaluate_student(
                    final, real[args.test_split], args.resolution, batch_size=training.per_device_eval_batch_size
                )
                if (
                    validation_split is not None
                ):  # temperature scaling: T from the held-out part of train, never from test
                    batch = training.per_device_eval_batch_size
                    temperature = fit_temperature(
                        final, validation_split, args.resolution, batch_size=batch, seed=training.seed
                    )
                    scaled = evaluate_student(
                        final, real[args.test_split], args.resolution, batch_size=batch, temperature=temperature
                    )
                    test_result["temperature_scaling"] = {
                        "temperature": temperature,
                        "fitted_on": f"{len(validation_split)} held-out training images (--validation_fraction)",
                        **{k: scaled[k] for k in ("ece", "brier", "nll", "per_category_ece", "reliability")},
                    }
                atomic_write_json(os.path.join(training.output_dir, "test_metrics.json"), to_json(test_result))
            write_student_card(
                training.output_dir, final, args, training, class_names, samples, trainer.state, test_result
            )
            claim.update(finished=True)
        # the other processes wait for the main one's evaluation: one that exits early tears its process group
        # down under a live peer (gloo aborts it, "terminate called without an active exception")
        trainer.accelerator.wait_for_everyone()
        return training.output_dir


def _claim_on_every_process(args, training, inputs, hold):
    """The main process claims --output_dir; under several processes all stop with its one-line refusal."""
    claim, refusal = None, None
    if training.process_index == 0:  # the main process claims first; the others then read its marker
        try:
            claim = _claim_output_dir(args, training, inputs, hold)
        except ValueError as error:  # FolderError, DataError
            refusal = error
    if training.world_size > 1:  # every process stops with the main one's one-line refusal (no peer traceback)
        agree_on_refusal(refusal, training.world_size, broadcast_object_list)
    elif refusal is not None:
        raise refusal
    if claim is None:
        claim = _claim_output_dir(args, training, inputs, hold)
    return claim


def parse_student_args(argv=None):
    return parse_arguments(
        (StudentArguments, StudentTrainingArguments),
        argv,
        description="Train a DAKTer segmentation student on real + generated SAR data.",
    )


def main(argv=None) -> str:
    args, training = parse_student_args(argv)
    check_student_output(args, training)
    output_dir = train_student(args, training)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # every process leaves together, after the barrier above
    return output_dir


def check_student_output(args: StudentArguments, training: TrainingArguments) -> None:
    """The one output rule (`ownership.check_output_path`) for --output_dir, and --generated that is generated,
    before any data loads. (The experiment runner calls `train_student` inside its own folder, checked there.)"""
    inputs = [source_path(args.real), *args.generated, args.teacher, args.student_weights]
    check_output_path(training.output_dir, inputs, kind="train-student", flag="--output_dir", overwrite=args.overwrite)
    for spec in args.generated:
        check_generated(spec)
