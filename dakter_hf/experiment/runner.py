"""`dakter experiment`: data -> b -> joint model(s) -> generated sets -> students -> test -> report.

The plan is built from the experiment file before anything runs (see `config.py`); each
step is cached under a key of its inputs (see `steps.py`), so arms that share a joint
model or a generated set share the step, a re-run does only what is missing, and the
report is always rebuilt from the cached results. Steps run one after another in this
process, each through the same code as its own command (`dakter data`, `train_joint.py`,
`dakter generate`, `dakter quality`, `train_student.py`), on CPU or GPU alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import datasets
from accelerate import PartialState

from dakter_hf.data.export import ExportSettings, export_dataset
from dakter_hf.data.options import normalization_from_options
from dakter_hf.data.save import save_dataset
from dakter_hf.data.sources import load_saved, source_path
from dakter_hf.errors import FolderError
from dakter_hf.evaluation.fid import InceptionWeightsMissing, find_inception_weights, frechet_distances
from dakter_hf.evaluation.report import quality_report
from dakter_hf.experiment.config import (
    CURATION_DEFAULTS,
    SOFT_LABEL_DEFAULTS,
    Arm,
    ExperimentConfig,
    effective_joint_setting,
    generation_step_settings,
    joint_settings,
    split_student_settings,
    student_name,
)
from dakter_hf.experiment.report import write_report
from dakter_hf.experiment.segmenter import evaluate_segmenter
from dakter_hf.experiment.steps import Progress, Step, read_done, run_step
from dakter_hf.experiment.subsets import images_with_oil, scarcity_subset, subset_summary
from dakter_hf.generation.config import GenerationSettings
from dakter_hf.generation.curation import CURATION_NAME
from dakter_hf.generation.dataset import generate_dataset
from dakter_hf.generation.loading import load_pipeline
from dakter_hf.joint.arguments import JointTrainingArguments
from dakter_hf.joint.balance import balance_arguments, balance_resolution_of, snr_balance
from dakter_hf.joint.checkpoints import sorted_checkpoints
from dakter_hf.joint.training import train
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.students.metrics import to_json
from dakter_hf.students.train import StudentArguments, StudentTrainingArguments, train_student
from dakter_hf.utils.devices import no_accelerator
from dakter_hf.utils.files import atomic_write_json, read_json
from dakter_hf.utils.ownership import (
    MARKER,
    FolderLock,
    check_not_an_input,
    check_output_path,
    claim_folder,
    dataset_fingerprint,
    is_within,
    read_marker,
    settings_hash,
)


logger = logging.getLogger(__name__)


def source_fingerprint(spec: str) -> str:
    """Names, sizes and times of the source's files (a changed file changes every key below the data step)."""

    path = source_path(spec)
    if path is None:
        return spec  # simulate:N is its own content
    if not os.path.exists(path):
        raise FileNotFoundError(f"data.source {spec}: {path} does not exist")
    entries = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            info = os.stat(os.path.join(root, name))
            entries.append(f"{os.path.relpath(os.path.join(root, name), path)}:{info.st_size}:{info.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def _inception_weights(path: Optional[str]) -> Optional[Dict[str, Any]]:
    """Name and size of the Inception weights FID would use, or None when there are none."""

    try:
        found = find_inception_weights(path)
    except InceptionWeightsMissing:
        return None
    return {"file": os.path.basename(found), "bytes": os.path.getsize(found)}


@dataclass
class Plan:
    """The steps in run order, and which student step gives each (arm, student, scale, seed, fraction).

    The per-arm maps are keyed by (arm name, real fraction); fraction 1.0 is the full training split.
    """

    steps: List[Step] = field(default_factory=list)
    # {arm, student, scale, seed, fraction, budget, step}
    runs: List[Dict[str, Any]] = field(default_factory=list)
    joint_of_arm: Dict[tuple, Step] = field(default_factory=dict)
    generated_of_arm: Dict[tuple, Step] = field(default_factory=dict)
    quality_of_arm: Dict[tuple, Step] = field(default_factory=dict)
    data: Optional[Step] = None  # the full real data (`dakter data`)
    data_of_fraction: Dict[float, Step] = field(default_factory=dict)  # the data step or a subset step
    balance: Optional[Step] = None  # b of the largest fraction's data
    balance_of_fraction: Dict[float, Step] = field(default_factory=dict)
    # joint step key -> the balance step whose b it trains with (only joint steps that use the SNR value)
    balance_of_joint: Dict[str, Step] = field(default_factory=dict)
    teacher: Optional[Step] = None  # the largest fraction's teacher
    teacher_of_fraction: Dict[float, Step] = field(default_factory=dict)
    # the joint models as segmenters: {arm (the first asking), fraction, seed, step}
    segmenter_runs: List[Dict[str, Any]] = field(default_factory=list)

    def add(self, step: Step) -> Step:
        """Add a step once (arms sharing a step share its key)."""
        for existing in self.steps:
            if existing.kind == step.kind and existing.key == step.key:
                return existing
        self.steps.append(step)
        return step


def _fraction_tag(fraction: float) -> str:
    """A label prefix for the steps of a scarcity subset ("" for the full split: labels as before)."""
    return "" if fraction == 1.0 else f"f{fraction:g}-"


class ExperimentRunner:
    """Builds the plan of an `ExperimentConfig` and runs it (`run()`), then writes the report."""

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.root = config.output_dir
        self.results: Dict[str, Dict[str, Any]] = {}
        self.plan = self._build_plan()

    # ------------------------------------------------------------------ the plan
    def _build_plan(self) -> Plan:
        config, plan = self.config, Plan()
        plan.data = plan.add(
            Step(
                "data",
                "real",
                dict(config.data),
                {"source": source_fingerprint(config.data["source"])},
                self._run_data,
            )
        )
        for fraction in config.real_fractions:
            data = plan.data
            if fraction != 1.0:  # a seeded, stratified subset of the training split, shared by every arm
                settings = {"fraction": fraction, "seed": config.subset_seed}
                data = plan.add(
                    Step(
                        "subset",
                        f"real-{fraction:g}-seed{config.subset_seed}",
                        settings,
                        {"data": plan.data.key},
                        self._run_subset,
                    )
                )
            plan.data_of_fraction[fraction] = data
            self._plan_fraction(plan, fraction, data.key)
        largest = config.real_fractions[-1]
        plan.balance = plan.balance_of_fraction[largest]
        plan.teacher = plan.teacher_of_fraction.get(largest)
        return plan

    def _plan_fraction(self, plan: Plan, fraction: float, data_key: str) -> None:
        """The steps of one real fraction, every one reading `data_key` (its data)."""
        config, tag = self.config, _fraction_tag(fraction)
        plan.balance_of_fraction[fraction] = plan.add(self._balance_step(config.joint, data_key, tag))
        # the key knows whether Inception weights were there: adding them later computes FID
        quality_settings = {
            **config.quality,
            "inception_found": _inception_weights(config.quality["inception_weights"]),
        }
        segmenters: Dict[str, Step] = {}  # joint step key -> its first segmenter step (arms share it)
        for arm in config.arms:
            if not arm.uses_generated:
                continue
            settings = joint_settings(config.joint, arm)
            loss, encoding = settings.get("label_loss", "ce"), settings.get("label_encoding", "onehot")
            slug = f"{tag}{loss}-{encoding}-b{settings.get('balancing_factor', 'auto')}"
            # the SNR value is computed once, by a balance step; b depends only on the data and on settings
            # the joint key already holds, so the key needs no balance input
            balance = None
            if effective_joint_setting(settings, "balancing_factor") == "auto":
                balance = plan.add(self._balance_step(settings, data_key, tag))
            joint = plan.add(
                Step(
                    "joint",
                    slug,
                    settings,
                    {"data": data_key},
                    self._run_joint,
                    budget_minutes=settings.get("max_train_minutes"),
                )
            )
            if balance is not None:
                plan.balance_of_joint[joint.key] = balance
            generation = generation_step_settings(config.generation, arm, max(config.scales))
            source = generation.get("soft_label_source")
            generated = plan.add(
                Step(
                    "generate",
                    slug + (f"-{source}" if source else ""),
                    generation,
                    {"joint": joint.key, "data": data_key},
                    self._run_generate,
                )
            )
            quality = plan.add(
                Step(
                    "quality",
                    generated.label,
                    quality_settings,
                    {"generated": generated.key, "data": data_key},
                    self._run_quality,
                )
            )
            key = (arm.name, fraction)
            plan.joint_of_arm[key], plan.generated_of_arm[key], plan.quality_of_arm[key] = joint, generated, quality
            segmenter = config.segmenter_of(arm)
            if segmenter is not None and joint.key not in segmenters:
                for seed in config.seeds:
                    step = plan.add(
                        Step(
                            "segment",
                            f"{slug}-s{seed}",
                            {**segmenter, "seed": seed},
                            {"joint": joint.key, "data": data_key},
                            self._run_segmenter,
                        )
                    )
                    segmenters.setdefault(joint.key, step)
                    plan.segmenter_runs.append({"arm": arm.name, "fraction": fraction, "seed": seed, "step": step})
        if any(arm.teacher for arm in config.arms):
            settings = {**config.teacher, "mode": "real", "seed": config.seeds[0]}
            plan.teacher_of_fraction[fraction] = plan.add(
                Step(
                    "student",
                    f"{tag}teacher-{student_name(settings)}",
                    settings,
                    {"data": data_key},
                    self._run_student,
                    budget_minutes=settings.get("max_train_minutes"),
                )
            )
        for student in config.students:
            for arm in config.arms:
                for scale in config.scales if arm.uses_generated else [None]:
                    for seed in config.seeds:
                        plan.runs.append(
                            {
                                "arm": arm.name,
                                "student": student_name(student),
                                "scale": scale,
                                "seed": seed,
                                "fraction": fraction,
                                "budget": config.budget_of(arm) if arm.uses_generated else "equal_steps",
                                "step": plan.add(
                                    self._student_step(plan, student, arm, scale, seed, fraction, data_key)
                                ),
                            }
                        )

    def _balance_step(self, joint: Dict[str, Any], data_key: str, tag: str = "") -> Step:
        """The step that computes the SNR value b at the resolution these joint settings train with."""
        resolution = effective_joint_setting(joint, "resolution")
        balance_resolution = effective_joint_setting(joint, "balance_resolution")
        settings = {"resolution": resolution, "balance_resolution": balance_resolution}
        return Step("balance", f"{tag}b-{resolution}px", settings, {"data": data_key}, self._run_balance)

    def _student_step(
        self,
        plan: Plan,
        student: Dict[str, Any],
        arm: Arm,
        scale: Optional[float],
        seed: int,
        fraction: float = 1.0,
        data_key: Optional[str] = None,
    ) -> Step:
        settings = {**student, **(arm.student or {}), "mode": arm.mode, "seed": seed}
        inputs = {"data": data_key or plan.data.key}
        if arm.uses_generated:
            settings["scale"] = scale
            generated = plan.generated_of_arm[(arm.name, fraction)]
            inputs["generated"] = generated.key
            # equal_epochs changes the steps only where the student counts steps (max_steps > 0)
            if self.config.budget_of(arm) == "equal_epochs" and (settings.get("max_steps") or -1) > 0:
                settings["budget"] = "equal_epochs"
        if arm.teacher:
            inputs["teacher"] = plan.teacher_of_fraction[fraction].key
        teacher = "-teacher" if arm.teacher else ""
        slug = f"{_fraction_tag(fraction)}{student_name(student)}-{arm.mode}{teacher}-s{seed}"
        slug += f"-x{scale:g}" if scale is not None else ""
        source = generated.settings.get("soft_label_source") if arm.uses_generated else None
        slug += f"-{source}" if source else ""  # (labels only: the key holds the generated set's)
        slug += "-epochs" if "budget" in settings else ""
        slug += "".join(f"-{key}{value}" for key, value in sorted((arm.student or {}).items()))
        return Step(
            "student", slug, settings, inputs, self._run_student, budget_minutes=student.get("max_train_minutes")
        )

    def num_labelled(self, fraction: float) -> int:
        """The real training images of a fraction (its data step must have run)."""
        return self.result(self.plan.data_of_fraction[fraction])["splits"][self.config.data["train_split"]]

    def planned_steps(self, step: Step) -> Optional[int]:
        """The optimizer steps a student step trains under its budget (its data step must have run).

        equal_steps: the student's max_steps. equal_epochs: round(max_steps x (n_real + n_generated) / n_real),
        n_real the real images it trains on (the training split less the `validation_fraction` part, as
        train_student splits it: ceil(fraction x n) held out) and n_generated = round(scale x n_real), the
        rows train_student's `generated_rows` mixes in.
        """
        max_steps = step.settings.get("max_steps")
        if max_steps is None or max_steps <= 0:
            return None
        if step.settings.get("budget") != "equal_epochs":
            return int(max_steps)
        count = self.result(self._input_step(step, "data"))["splits"][self.config.data["train_split"]]
        held_out = math.ceil(step.settings.get("validation_fraction", 0.0) * count)
        n_real = count - held_out
        n_generated = int(round(step.settings["scale"] * n_real))
        return int(round(max_steps * (n_real + n_generated) / n_real))

    # ------------------------------------------------------------------ running
    def run(self, overwrite: bool = False) -> Dict[str, Any]:
        """Run every step not yet cached, then write the report; returns the report's JSON."""
        self._check_folders(overwrite)
        # the runner owns OUTPUT_DIR; steps are keyed by content, so any experiment file may add to it
        with FolderLock(self.root, flag="output_dir"):
            claim_folder(self.root, "experiment", {}, overwrite=overwrite, flag="output_dir")
            progress = Progress(self.plan.steps, self.root)
            total = len(self.plan.steps)
            cached = sum(read_done(s.folder(self.root)) is not None for s in self.plan.steps)
            print(f"experiment {self.config.name}: {total} steps ({cached} cached) in {self.root}")
            for index, step in enumerate(self.plan.steps, 1):
                was_done = read_done(step.folder(self.root)) is not None
                if not was_done:
                    print(
                        f"[{index}/{total}] {step.kind} {step.label}: running (ETA for the rest: "
                        f"{progress.eta(self.plan.steps[index - 1 :])})",
                        flush=True,
                    )
                start = time.time()
                self.results[step.key] = run_step(step, self.root)
                if was_done:
                    print(f"[{index}/{total}] {step.kind} {step.label}: cached")
                else:
                    progress.record(step, time.time() - start)
                    print(
                        f"[{index}/{total}] {step.kind} {step.label}: done in {(time.time() - start) / 60:.1f} min",
                        flush=True,
                    )

        return write_report(self)

    def _input_paths(self) -> List[str]:
        """Everything the experiment reads: no output folder may hold, be or lie inside one of them."""

        config = self.config
        joints = [config.joint] + [arm.joint for arm in config.arms if arm.joint]
        students = config.students + [config.teacher]
        paths = [source_path(config.data["source"]), config.path, config.quality["inception_weights"]]
        return [
            p for p in paths + [j.get("init_from") for j in joints] + [s.get("student_weights") for s in students] if p
        ]

    def check_paths(self, overwrite: bool = False) -> None:
        """The one output rule (`ownership.check_output_path`) for output_dir and report_dir, before any step."""
        inputs = self._input_paths()
        check_output_path(self.root, inputs, kind="experiment", flag="output_dir", overwrite=overwrite)
        in_root = is_within(self.config.report_dir, self.root)
        check_output_path(
            self.config.report_dir,
            inputs,
            kind="experiment-report",
            flag="report_dir",
            within=("experiment",) if in_root else (),
        )

    def _check_folders(self, overwrite: bool) -> None:
        """Refuse bad output or report folders before anything is written."""

        self.check_paths(overwrite)
        root, report = self.root, self.config.report_dir
        for folder, flag in ((root, "output_dir"), (report, "report_dir")):
            check_not_an_input(folder, self._input_paths(), flag=flag)
        if report == root or is_within(root, report):
            raise FolderError(
                f"report_dir {report} must not be or hold output_dir {root}; choose a report folder inside or beside "
                "it"
            )
        marker = read_marker(root) if os.path.isdir(root) else None
        if overwrite and os.path.isdir(root) and os.listdir(root) and (marker or {}).get("kind") != "experiment":
            raise FolderError(
                f"output_dir {root} was not written by `dakter experiment`; --overwrite empties only an experiment's "
                "own folder"
            )
        claim_folder(root, "experiment", {}, overwrite=overwrite, flag="output_dir", write=False)
        if not is_within(report, root) or not overwrite:
            claim_folder(report, "experiment-report", {"experiment": self.config.name}, flag="report_dir", write=False)

    def work(self, step: Step) -> str:
        """Where the step's own command wrote its output (results hold no paths: the folder may move)."""
        return os.path.join(step.folder(self.root), "work")

    def result(self, step: Step) -> Dict[str, Any]:
        if step.key not in self.results:
            done = read_done(step.folder(self.root))
            if done is None:
                raise RuntimeError(f"step {step.kind} {step.label} has not run")
            self.results[step.key] = done["result"]
        return self.results[step.key]

    # ------------------------------------------------------------------ the steps
    def _run_data(self, step: Step, work: str) -> Dict[str, Any]:
        data = self.config.data
        options = {
            key: data[key] for key in ("sensor", "classes", "num_classes", "size", "seed") if data.get(key) is not None
        }
        normalization = normalization_from_options(
            data["source"], data.get("intensity") or "linear", data.get("clip_percentiles")
        )
        export_dataset(ExportSettings(source=data["source"], out=work, normalization=normalization, **options))
        saved = load_saved(work)
        for split in (data["train_split"], data["test_split"]):
            if split not in saved:
                raise ValueError(f"data.source {data['source']}: no split {split!r}; splits: {list(saved)}")
        return {
            "splits": {name: len(split) for name, split in saved.items()},
            "fingerprints": {name: dataset_fingerprint(split) for name, split in saved.items()},
        }

    def _run_subset(self, step: Step, work: str) -> Dict[str, Any]:
        """A scarcity subset of the real training split (`subsets.scarcity_subset`), saved as a dataset
        (train = the subset, test = the full test split) that every step of its fraction reads."""
        data, source = self.config.data, self.work(self.plan.data)
        saved = load_saved(source)
        train = saved[data["train_split"]]
        flags = images_with_oil(train)
        indices = scarcity_subset(flags, step.settings["fraction"], step.settings["seed"])
        subset = datasets.DatasetDict(
            {
                data["train_split"]: train.select(indices).flatten_indices(),
                data["test_split"]: saved[data["test_split"]],
            }
        )
        marker = read_marker(source) or {}  # the same normalization record, so every reader decodes alike
        settings = {**marker.get("settings", {}), "subset": dict(step.settings)}
        inputs = {"data": marker.get("settings_hash"), "indices": indices}
        record = {"kind": "data", "settings_hash": settings_hash(settings, inputs), "settings": settings}
        save_dataset(subset, work, overwrite=True, extra_files={MARKER: json.dumps(record, indent=2) + "\n"})
        summary = subset_summary(flags, indices)
        print(
            f"subset {step.settings['fraction']:g} (seed {step.settings['seed']}): {summary['num_images']} of "
            f"{summary['full_num_images']} training images, {summary['num_with_oil']} with oil "
            f"({100 * summary['oil_share']:.1f} % against {100 * summary['full_oil_share']:.1f} %)"
        )
        return {
            "splits": {name: len(split) for name, split in subset.items()},
            "fingerprints": {name: dataset_fingerprint(split) for name, split in subset.items()},
            "indices": indices,
            **summary,
        }

    def data_folder(self, step: Step) -> str:
        """The saved real dataset `step` reads (the data step's, or its fraction's subset)."""
        return self.work(self._input_step(step, "data"))

    def _train_split(self, step: Optional[Step] = None):
        """The real training split `step` reads (default: the full one)."""
        split = self.config.data["train_split"]
        folder = self.work(self.plan.data) if step is None else self.data_folder(step)
        return load_saved(folder, split=split)[split]

    def _run_balance(self, step: Step, work: str) -> Dict[str, Any]:
        resolution = balance_resolution_of(step.settings["balance_resolution"], step.settings["resolution"])
        _, stats = snr_balance(self._train_split(step), resolution, show_progress=True)
        print(
            f"balancing factor b = {stats.b:.4f} ({stats.num_images} training images at {resolution or 'native'} px)"
        )
        return {
            "b": stats.b,
            "power_image": stats.power_image,
            "power_label": stats.power_label,
            "num_images": stats.num_images,
            "resolution": resolution,
        }

    def _input_step(self, step: Step, name: str) -> Step:
        """The step that `step` reads as input `name` (e.g. "joint", "generated")."""
        return next(s for s in self.plan.steps if s.key == step.inputs[name])

    def _run_joint(self, step: Step, work: str) -> Dict[str, Any]:
        settings = dict(step.settings)
        if step.key in self.plan.balance_of_joint:  # the SNR value: the balance step's b, not computed again
            balance = self.result(self.plan.balance_of_joint[step.key])
            settings.update(balance_arguments(balance["b"], balance["resolution"]))
        args = JointTrainingArguments(
            **settings,
            data=self.data_folder(step),
            split=self.config.data["train_split"],
            output_dir=work,
            resume_from_checkpoint="latest",
            report_to="none",
        )
        pipeline = train(args)

        config = DAKTerPipeline.load_config(pipeline)
        checkpoints = sorted_checkpoints(work)
        steps = int(checkpoints[-1].rsplit("-", 1)[-1]) if checkpoints else args.max_train_steps
        return {"b": config["balancing_factor"], "steps": steps}

    def _run_generate(self, step: Step, work: str) -> Dict[str, Any]:
        settings, joint = step.settings, self._input_step(step, "joint")
        real = self.result(self._input_step(step, "data"))["splits"][self.config.data["train_split"]]
        num_samples = max(1, math.ceil(settings["scale"] * real))  # scale x the (subset's) real images
        generation = GenerationSettings(
            num_samples=num_samples,
            base_seed=settings["seed"],
            batch_size=settings["batch_size"],
            num_inference_steps=settings["steps"],
            eta=settings["eta"],
            scheduler=settings["scheduler"],
            dtype=settings["dtype"],
            **{k: settings[k] for k in SOFT_LABEL_DEFAULTS if k in settings},  # in the settings only when not default
            # curation matches the real training split this step's students learn from (the fraction's)
            match_real=self.data_folder(step) if settings.get("match_real") else None,
            over_generate=settings.get("over_generate", CURATION_DEFAULTS["over_generate"]),
        )
        real = self._train_split(step) if settings.get("match_real") else None
        generate_dataset(os.path.join(self.work(joint), "pipeline"), work, generation, real_data=real)
        result = {"num_samples": num_samples}
        if real is not None:  # the oil fraction before (candidates) and after (kept), from OUT/curation.json
            result["curation"] = read_json(os.path.join(work, CURATION_NAME))
        return result

    def _run_quality(self, step: Step, work: str) -> Dict[str, Any]:
        generated_step = self._input_step(step, "generated")
        generated = load_saved(self.work(generated_step), split="train")["train"]
        real = self._train_split(step)
        settings = step.settings
        report = quality_report(real, generated, max_images=settings["max_images"], show_progress=True)
        try:
            report["frechet"] = frechet_distances(
                real["image"], generated["image"], weights=settings["inception_weights"]
            )
        except (InceptionWeightsMissing, ImportError) as missing:  # FID is optional; the note says how to get it
            report["frechet"] = {"fid": None, "sfid": None, "note": str(missing)}
        os.makedirs(work, exist_ok=True)
        atomic_write_json(os.path.join(work, "quality.json"), report)
        return report

    def _run_student(self, step: Step, work: str) -> Dict[str, Any]:
        settings = dict(step.settings)
        mode, seed, scale = settings.pop("mode"), settings.pop("seed"), settings.pop("scale", 1.0)
        if settings.pop("budget", "equal_steps") == "equal_epochs":
            settings["max_steps"] = self.planned_steps(step)
        student_kwargs, training_kwargs = split_student_settings(settings)
        generated = [self.work(self._input_step(step, "generated"))] if "generated" in step.inputs else []
        teacher = self.work(self._input_step(step, "teacher")) if "teacher" in step.inputs else None
        data = self.config.data
        args = StudentArguments(
            real=self.data_folder(step),
            generated=generated,
            scale=scale,
            mode=mode,
            teacher=teacher,
            train_split=data["train_split"],
            test_split=data["test_split"],
            card_name=f"{self.config.name}: {step.label}",
            **student_kwargs,
        )
        training = StudentTrainingArguments(
            output_dir=work, seed=seed, report_to="none", resume_from_checkpoint="latest", **training_kwargs
        )
        train_student(args, training)
        with open(os.path.join(work, "test_metrics.json"), encoding="utf-8") as handle:
            metrics = json.load(handle)
        with open(os.path.join(work, "trainer_state.json"), encoding="utf-8") as handle:
            steps = json.load(handle)["global_step"]  # a time budget can end a run early: the report shows it
        return {"metrics": metrics, "steps": steps}

    def _run_segmenter(self, step: Step, work: str) -> Dict[str, Any]:
        """The joint model as a segmenter of the test split, scored like a student (`segmenter.py`)."""
        settings = step.settings
        device = str(PartialState(cpu=no_accelerator()).device)  # where generation samples: a GPU when there is one
        pipeline = load_pipeline(os.path.join(self.work(self._input_step(step, "joint")), "pipeline"), device=device)
        split = self.config.data["test_split"]
        test = load_saved(self.data_folder(step), split=split)[split]
        metrics = to_json(
            evaluate_segmenter(
                pipeline,
                test,
                label_timestep=settings["label_timestep"],
                seed=settings["seed"],
                batch_size=settings["batch_size"],
            )
        )
        os.makedirs(work, exist_ok=True)
        atomic_write_json(os.path.join(work, "test_metrics.json"), metrics)
        return {"metrics": metrics, "steps": None}
