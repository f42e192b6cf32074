"""The experiment file: data, joint-model settings, generation, students, scales, seeds and arms.

    name: sos_palsar_cpu
    output_dir: runs/sos_palsar_cpu           # step cache (a re-run resumes here)
    report_dir: docs/experiments/sos_palsar_cpu   # optional (default OUTPUT_DIR/report)
    data: {source: sos:../shared/data/sos, sensor: palsar}
    joint: {resolution: 64, unet_preset: small, max_train_steps: 1500, ...}   # train_joint.py arguments
    generation: {steps: 25, scheduler: dpm++, batch_size: 16}
    students:                                  # train_student.py arguments, one dict per student
      - {student: segformer-b0, resolution: 64, learning_rate: 1.0e-3, max_steps: 1500}
    scales: [1.0]
    seeds: [0, 1, 2]
    arms: [real, ddpm-l2, dakter-no-kd, dakter-kd]
    show_real_images: false                    # figures without real images (SOS: scientific use only)
    real_fractions: [0.1, 0.25, 1.0]           # label scarcity (default [1.0]): see subsets.py
    subset_seed: 0                             # the seed of the scarcity subsets (one subset per fraction)
    budget: equal_steps                        # or equal_epochs (the paper's protocol); an arm may override it
    joint_segmenter: false                     # true or {label_timestep, batch_size}: the joint model as a
                                               # segmenter of the test split, one more row of Table 1

Every section is checked like its command line (unknown keys and bad values name the file
and the key) before anything runs. Arms are the paper's comparisons (`ARMS`), or a mapping
`{name: ..., mode: real|hard|dakter, joint: {overrides}, generation: {overrides}, budget: ...,
segmenter: true}` for one of your own.

Label scarcity: each fraction < 1 of `real_fractions` is a seeded subset of the real training
split, stratified by whether an image holds oil (`subsets.scarcity_subset`); every step of that
fraction (b, joint models, generated sets, quality, every student of every arm, the segmenter)
reads it, and the number of generated samples is scale x the subset's size. Fraction 1.0 is
the full split, with the step keys it always had.

The student budget (`budget`, top level, or per arm): `equal_steps` trains every arm for the
student's `max_steps`; `equal_epochs` (the paper's protocol) gives an arm with generated data
round(max_steps x (n_real + n_generated) / n_real) steps, n_real the real images it trains on
(after `validation_fraction`) and n_generated = round(scale x n_real) the generated rows
train_student mixes in, i.e. as many passes over its larger set as the real arm makes over
its own. A student without `max_steps` trains `num_train_epochs` epochs in every arm: equal
epochs already.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from dakter_hf.generation.config import GenerationSettings, check_generation_options
from dakter_hf.generation.schedulers import make_scheduler
from dakter_hf.joint.arguments import JointTrainingArguments
from dakter_hf.joint.balance import balancing_choice
from dakter_hf.students.train import StudentArguments, StudentTrainingArguments
from dakter_hf.utils.arguments import ArgumentParser, convert_config_values, read_config_file


@dataclass(frozen=True)
class Arm:
    """One column of the paper's comparison: which joint model (if any) feeds which student loss."""

    name: str
    mode: str  # student mode: real, hard (argmax labels + CE) or dakter (KD on soft labels)
    joint: Optional[Dict[str, Any]] = None  # overrides of the joint settings; None: no generated data
    teacher: bool = False  # the teacher-KD baseline: a larger real-only student's soft labels
    title: str = ""
    generation: Optional[Dict[str, Any]] = None  # overrides of the generation settings (e.g. soft_label_source)
    budget: Optional[str] = None  # equal_steps or equal_epochs; None: the experiment's `budget`
    segmenter: bool = False  # also evaluate this arm's joint model as a segmenter of the test split
    student: Optional[Dict[str, Any]] = None  # overrides of every student's settings in this arm (e.g. kd_weight)

    @property
    def uses_generated(self) -> bool:
        return self.joint is not None


ARMS: Dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("real", "real", title="Real only"),
        Arm("ddpm-l2", "hard", {"label_loss": "l2"}, title="DDPM (L2 labels, hard)"),
        Arm(
            "satsynth",
            "hard",
            {"label_loss": "l2", "label_encoding": "binary"},
            title="SatSynth (binary labels, hard)",
        ),
        Arm("dakter-no-kd", "hard", {}, title="DAKTer w/o KD (argmax, CE)"),
        Arm("dakter-kd", "dakter", {}, title="DAKTer (KD)"),
        Arm("b-0.1", "dakter", {"balancing_factor": "0.1"}, title="DAKTer, b = 0.1"),
        Arm("b-snr", "dakter", {"balancing_factor": "auto"}, title="DAKTer, b = SNR value"),
        Arm("b-1", "dakter", {"balancing_factor": "1"}, title="DAKTer, b = 1"),
        Arm("b-2", "dakter", {"balancing_factor": "2"}, title="DAKTer, b = 2"),
        Arm("teacher-kd", "real", None, teacher=True, title="Teacher KD (real only)"),
    )
}
BASELINE_ARM = "real"
DATA_KEYS = {
    "source",
    "sensor",
    "classes",
    "num_classes",
    "size",
    "seed",
    "intensity",
    "clip_percentiles",
    "train_split",
    "test_split",
}
# the soft-label source (GenerationSettings' fields); left out of a step's key at these defaults, so the
# generated sets made before these settings existed keep their keys
SOFT_LABEL_DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(GenerationSettings)
    if f.name in ("soft_label_source", "trajectory_steps", "posterior_timestep")
}
# curation (`dakter generate --match-real`): `match_real: true` keeps the generated pairs whose per-image
# class fractions match the training split the arm's students learn from (the fraction's subset);
# left out of a step's key at these defaults too
CURATION_DEFAULTS = {"match_real": False, "over_generate": 3.0}
GENERATION_DEFAULTS = {
    "steps": 50,
    "scheduler": None,
    "batch_size": 16,
    "eta": 0.0,
    "seed": 0,
    "dtype": None,
    **SOFT_LABEL_DEFAULTS,
    **CURATION_DEFAULTS,
}
# the generation keys that stay out of a step's key at their defaults (the keys of older sets stay valid)
OPTIONAL_GENERATION_DEFAULTS = {**SOFT_LABEL_DEFAULTS, **CURATION_DEFAULTS}
BUDGETS = ("equal_steps", "equal_epochs")
SEGMENTER_DEFAULTS = {"label_timestep": None, "batch_size": 16}
QUALITY_DEFAULTS = {"max_images": None, "inception_weights": None}
TOP_KEYS = {
    "name",
    "output_dir",
    "report_dir",
    "data",
    "joint",
    "generation",
    "students",
    "teacher",
    "scales",
    "seeds",
    "arms",
    "quality",
    "description",
    "show_real_images",
    "baseline",
    "real_fractions",
    "subset_seed",
    "budget",
    "joint_segmenter",
}
# the runner sets these itself (paths, resumption, logging); a config may not
JOINT_RESERVED = {
    "data",
    "output_dir",
    "resume_from_checkpoint",
    "overwrite",
    "push_to_hub",
    "hub_model_id",
    "hub_private",
    "report_to",
    "sensor",
    "classes",
    "num_classes",
    "split",
    "intensity",
    "clip_percentiles",
}
STUDENT_RESERVED = {
    "real",
    "generated",
    "scale",
    "mode",
    "teacher",
    "output_dir",
    "overwrite",
    "seed",
    "resume_from_checkpoint",
    "sensor",
    "classes",
    "num_classes",
    "train_split",
    "test_split",
    "intensity",
    "clip_percentiles",
    "push_to_hub",
    "report_to",
    "card_name",
}


@dataclass
class ExperimentConfig:
    """A checked experiment file (see the module docstring)."""

    name: str
    output_dir: str
    data: Dict[str, Any]
    joint: Dict[str, Any]
    generation: Dict[str, Any]
    students: List[Dict[str, Any]]
    teacher: Dict[str, Any]
    scales: List[float]
    seeds: List[int]
    arms: List[Arm]
    quality: Dict[str, Any]
    report_dir: Optional[str] = None
    description: str = ""
    show_real_images: bool = True  # false: figures show generated pairs only (data you may not publish)
    real_fractions: List[float] = field(default_factory=lambda: [1.0])  # ascending
    subset_seed: int = 0
    budget: str = "equal_steps"
    joint_segmenter: Optional[Dict[str, Any]] = None  # segmenter settings; None: only arms that ask for one
    baseline_arm: str = BASELINE_ARM  # the real-only arm every other arm is paired against
    path: Optional[str] = None
    text: str = field(default="", repr=False)

    @property
    def baseline(self) -> str:
        return self.baseline_arm

    def budget_of(self, arm: Arm) -> str:
        """The student budget of `arm`: its own, else the experiment's."""
        return arm.budget or self.budget

    def segmenter_of(self, arm: Arm) -> Optional[Dict[str, Any]]:
        """The segmenter settings for `arm`'s joint model, or None when nobody asked for one."""
        if not (arm.segmenter or self.joint_segmenter is not None) or not segments(self.joint, arm):
            return None
        return dict(self.joint_segmenter or SEGMENTER_DEFAULTS)


def segments(joint: Dict[str, Any], arm: Arm) -> bool:
    """Can `arm`'s joint model segment (label logits: label_loss ce)?"""
    return arm.uses_generated and str(effective_joint_setting(joint_settings(joint, arm), "label_loss")) == "ce"


def _section(config: dict, key: str, path: str, kind: type, default):
    value = config.get(key, default)
    if not isinstance(value, kind):
        raise ValueError(f"{path}: `{key}` must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _checked(values: dict, dataclass_types: tuple, reserved: set, where: str) -> dict:
    """Convert and check `values` like the command line of those dataclasses; refuse the keys the runner sets."""
    taken = sorted(set(values) & reserved)
    if taken:
        raise ValueError(f"{where}: {taken} are set by the experiment runner; remove them")
    parser = ArgumentParser(dataclass_types)
    return convert_config_values(parser, dict(values), where)


def _student_types() -> tuple:
    return (StudentArguments, StudentTrainingArguments)


def _arm(entry, path: str, index: int) -> Arm:
    if isinstance(entry, str):
        if entry not in ARMS:
            raise ValueError(
                f"{path}: unknown arm {entry!r}; choose from {', '.join(ARMS)} or give a mapping {{name, mode, joint}}"
            )
        return ARMS[entry]
    if isinstance(entry, dict):
        unknown = set(entry) - {"name", "mode", "joint", "title", "generation", "budget", "segmenter", "student"}
        if unknown or "name" not in entry or entry.get("mode") not in ("real", "hard", "dakter"):
            raise ValueError(
                f"{path}: an arm mapping needs `name` and `mode` (real, hard or dakter), optionally `joint`, "
                f"`generation`, `budget`, `segmenter`, `student` and `title`; got {entry}"
            )
        generation = entry.get("generation")
        if generation is not None:
            if not isinstance(generation, dict) or entry["mode"] == "real":
                raise ValueError(
                    f"{path}: arms[{index}].generation must be a mapping of generation settings, for an arm with "
                    f"generated data; got {generation!r}"
                )
            bad = sorted(set(generation) - set(GENERATION_DEFAULTS))
            if bad:
                raise ValueError(
                    f"{path}: arms[{index}].generation: unknown key(s) {bad}; known: {sorted(GENERATION_DEFAULTS)}"
                )
        budget = entry.get("budget")
        if budget is not None and budget not in BUDGETS:
            raise ValueError(f"{path}: arms[{index}].budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
        segmenter = entry.get("segmenter", False)
        if not isinstance(segmenter, bool) or (segmenter and entry["mode"] == "real"):
            raise ValueError(
                f"{path}: arms[{index}].segmenter must be true or false (true only for an arm with a joint model), "
                f"got {segmenter!r}"
            )
        joint = entry.get("joint")
        if entry["mode"] != "real" and joint is None:
            joint = {}
        if joint is not None:
            if not isinstance(joint, dict):
                raise ValueError(
                    f"{path}: arms[{index}].joint must be a mapping of train_joint.py arguments, got {joint!r}"
                )
            joint = _checked(joint, (JointTrainingArguments,), JOINT_RESERVED, f"{path}: arms[{index}].joint")
        return Arm(
            str(entry["name"]),
            entry["mode"],
            joint if entry["mode"] != "real" else None,
            title=entry.get("title", ""),
            generation=dict(generation) if generation else None,
            budget=budget,
            segmenter=segmenter,
            student=_arm_student(entry.get("student"), path, index),
        )
    raise ValueError(f"{path}: an arm is a name or a mapping, got {entry!r}")


def _arm_student(student, path: str, index: int) -> Optional[Dict[str, Any]]:
    """An arm's `student:` overrides (train_student.py arguments, e.g. kd_weight, temperature), checked like a
    `students:` entry; the runner's own keys are refused."""
    if student is None:
        return None
    if not isinstance(student, dict) or not student:
        raise ValueError(
            f"{path}: arms[{index}].student must be a mapping of train_student.py arguments, got {student!r}"
        )
    if "student" in student:
        raise ValueError(f"{path}: arms[{index}].student may not change the student model; list it in `students`")
    return _checked(student, _student_types(), STUDENT_RESERVED, f"{path}: arms[{index}].student")


def _baseline(raw: dict, arms: List[Arm], path: str) -> str:
    """`baseline:`, the arm the others are compared with: `real` unless the file names another real-only arm
    (e.g. one trained as many steps as the equal-epochs arms)."""
    name = raw.get("baseline", BASELINE_ARM)
    arm = next((a for a in arms if a.name == name), None)
    if arm is None or arm.uses_generated or arm.teacher:
        choices = ", ".join(a.name for a in arms if not a.uses_generated)
        raise ValueError(f"{path}: baseline must name a real-only arm of `arms` ({choices}), got {name!r}")
    return str(name)


def _check_finite(value: Any, where: str) -> None:
    """No setting of an experiment is inf or nan (YAML's .inf / .nan): one line naming the key."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: must be a finite number, got {value}")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _check_finite(item, f"{where}: {key}" if isinstance(key, str) else f"{where}[{key}]")


def load_experiment_config(
    path: str, output_dir: Optional[str] = None, report_dir: Optional[str] = None
) -> ExperimentConfig:
    """Read and check an experiment file; `output_dir`/`report_dir` override the file's."""

    raw = read_config_file(path)
    _check_finite(raw, path)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; known: {sorted(TOP_KEYS)}")
    name = str(raw.get("name") or os.path.splitext(os.path.basename(path))[0])
    data = _section(raw, "data", path, dict, None) if "data" in raw else None
    if not data or "source" not in data:
        raise ValueError(
            f"{path}: `data` must give at least `source` (sos:ROOT, osd:ROOT, folder:ROOT, simulate:N or a saved "
            "dataset dir)"
        )
    bad = sorted(set(data) - DATA_KEYS)
    if bad:
        raise ValueError(f"{path}: data: unknown key(s) {bad}; known: {sorted(DATA_KEYS)}")
    data = {"train_split": "train", "test_split": "test", **data}
    joint = _checked(
        _section(raw, "joint", path, dict, {}), (JointTrainingArguments,), JOINT_RESERVED, f"{path}: joint"
    )
    generation = {**GENERATION_DEFAULTS, **_section(raw, "generation", path, dict, {})}
    if set(generation) - set(GENERATION_DEFAULTS):
        raise ValueError(
            f"{path}: generation: unknown key(s) {sorted(set(generation) - set(GENERATION_DEFAULTS))}; known: "
            f"{sorted(GENERATION_DEFAULTS)}"
        )
    students = _section(raw, "students", path, list, None) if "students" in raw else None
    if not students:
        raise ValueError(
            f"{path}: `students` must list at least one student (e.g. - {{student: segformer-b0, resolution: 64}})"
        )
    students = [
        _checked(
            s if isinstance(s, dict) else {"student": s}, _student_types(), STUDENT_RESERVED, f"{path}: students[{i}]"
        )
        for i, s in enumerate(students)
    ]
    names = [student_name(s) for s in students]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: students: each student model may appear once, got {names}")
    teacher = _checked(
        _section(raw, "teacher", path, dict, {"student": "segformer-b5"}),
        _student_types(),
        STUDENT_RESERVED,
        f"{path}: teacher",
    )
    scales = _section(raw, "scales", path, list, [1.0])
    if not scales or any(isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0 for s in scales):
        raise ValueError(f"{path}: scales must be a non-empty list of numbers > 0, got {scales}")
    seeds = _section(raw, "seeds", path, list, [0])
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: seeds must be a non-empty list of distinct integers, got {seeds}")
    arms = [
        _arm(entry, path, i) for i, entry in enumerate(_section(raw, "arms", path, list, [BASELINE_ARM, "dakter-kd"]))
    ]
    if BASELINE_ARM not in [a.name for a in arms]:
        arms.insert(0, ARMS[BASELINE_ARM])  # every comparison is against real only
    if len({a.name for a in arms}) != len(arms):
        raise ValueError(f"{path}: arms must have distinct names, got {[a.name for a in arms]}")
    scales = [float(s) for s in scales]
    quality = {**QUALITY_DEFAULTS, **_section(raw, "quality", path, dict, {})}
    if set(quality) - set(QUALITY_DEFAULTS):
        raise ValueError(
            f"{path}: quality: unknown key(s) {sorted(set(quality) - set(QUALITY_DEFAULTS))}; known: "
            f"{sorted(QUALITY_DEFAULTS)}"
        )
    if quality["inception_weights"] is not None and not os.path.isfile(quality["inception_weights"]):
        raise FileNotFoundError(f"{path}: quality.inception_weights {quality['inception_weights']}: no such file")
    if quality["max_images"] is not None and (not isinstance(quality["max_images"], int) or quality["max_images"] < 2):
        raise ValueError(f"{path}: quality.max_images must be an integer >= 2 or null, got {quality['max_images']!r}")
    _check_generation(path, generation)
    for index, arm in enumerate(arms):
        if arm.generation:
            _check_generation(path, {**generation, **arm.generation}, where=f"arms[{index}].generation")
    _check_settings(path, joint, arms, students, teacher)
    fractions = _section(raw, "real_fractions", path, list, [1.0])
    if (
        not fractions
        or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1 for f in fractions)
        or len(set(map(float, fractions))) != len(fractions)
    ):
        raise ValueError(
            f"{path}: real_fractions must be a non-empty list of distinct numbers in (0, 1], got {fractions}"
        )
    subset_seed = raw.get("subset_seed", 0)
    if not isinstance(subset_seed, int) or isinstance(subset_seed, bool):
        raise ValueError(f"{path}: subset_seed must be an integer, got {subset_seed!r}")
    budget = raw.get("budget", "equal_steps")
    if budget not in BUDGETS:
        raise ValueError(f"{path}: budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    segmenter = _segmenter_settings(path, raw.get("joint_segmenter", False))
    for arm in arms:
        if arm.segmenter and not segments(joint, arm):
            raise ValueError(f"{path}: arm {arm.name}: a segmenter needs a joint model with label_loss ce")
        posterior = ({**generation, **(arm.generation or {})}).get("soft_label_source") == "posterior"
        segmented = arm.segmenter or (segmenter is not None and segments(joint, arm))
        untrained = arm.uses_generated and not effective_joint_setting(
            joint_settings(joint, arm), "independent_label_timestep"
        )
        if untrained and (posterior or segmented):
            raise ValueError(
                f"{path}: arm {arm.name}: posterior soft labels and the segmenter read the joint model with a clean "
                "image beside noisy labels, an input a model trained with independent_label_timestep 0 never saw; "
                "set joint.independent_label_timestep (e.g. 0.25)"
            )
    out = output_dir or raw.get("output_dir") or os.path.join("outputs", "experiments", name)
    # a run elsewhere (--out) reports beside itself, not into the file's (perhaps committed) report folder
    report = report_dir or (None if output_dir else raw.get("report_dir")) or os.path.join(out, "report")
    return ExperimentConfig(
        name=name,
        output_dir=os.path.abspath(out),
        data=data,
        joint=joint,
        generation=generation,
        students=students,
        teacher=teacher,
        scales=scales,
        seeds=list(seeds),
        arms=arms,
        quality=quality,
        report_dir=os.path.abspath(report),
        description=str(raw.get("description", "")),
        show_real_images=_section(raw, "show_real_images", path, bool, True),
        baseline_arm=_baseline(raw, arms, path),
        real_fractions=sorted(float(f) for f in fractions),
        subset_seed=subset_seed,
        budget=budget,
        joint_segmenter=segmenter,
        path=os.path.abspath(path),
        text=text,
    )


def _segmenter_settings(path: str, value) -> Optional[Dict[str, Any]]:
    """`joint_segmenter`: false (None), true (the defaults) or a mapping of SEGMENTER_DEFAULTS' keys."""
    if value is False or value is None:
        return None
    if value is True:
        return dict(SEGMENTER_DEFAULTS)
    if not isinstance(value, dict) or set(value) - set(SEGMENTER_DEFAULTS):
        raise ValueError(
            f"{path}: joint_segmenter must be true, false or a mapping of {sorted(SEGMENTER_DEFAULTS)}, got {value!r}"
        )
    settings = {**SEGMENTER_DEFAULTS, **value}
    timestep, batch = settings["label_timestep"], settings["batch_size"]
    if timestep is not None and (not isinstance(timestep, int) or isinstance(timestep, bool) or timestep < 0):
        raise ValueError(f"{path}: joint_segmenter.label_timestep must be an integer >= 0 or null, got {timestep!r}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"{path}: joint_segmenter.batch_size must be an integer >= 1, got {batch!r}")
    return settings


def generation_step_settings(generation: Dict[str, Any], arm: Arm, scale: float) -> Dict[str, Any]:
    """The generate step's settings of `arm`: the experiment's, the arm's overrides, the largest scale;
    the soft-label settings at their defaults left out (the keys of sets made before them stay valid)."""
    merged = {**generation, **(arm.generation or {}), "scale": scale}
    return {
        k: v
        for k, v in merged.items()
        if not (k in OPTIONAL_GENERATION_DEFAULTS and v == OPTIONAL_GENERATION_DEFAULTS[k])
    }


def _check_generation(path: str, generation: dict, where: str = "generation") -> None:
    try:
        check_generation_options(1, generation["batch_size"], 1, generation["steps"], generation["eta"], "consistent")
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {where}: {error}") from None
    soft = {k: generation[k] for k in SOFT_LABEL_DEFAULTS if generation[k] != SOFT_LABEL_DEFAULTS[k]}
    if soft:
        try:
            GenerationSettings(num_samples=1, **soft)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {where}: {error}") from None
    if not isinstance(generation["match_real"], bool):
        raise ValueError(f"{path}: {where}.match_real must be true or false, got {generation['match_real']!r}")
    try:  # the factor is checked as `dakter generate --over-generate` checks it
        GenerationSettings(num_samples=1, match_real="train split", over_generate=generation["over_generate"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {where}.over_generate: {error}") from None
    if generation["scheduler"] is not None:
        try:
            make_scheduler(
                str(generation["scheduler"]), {}
            )  # the name only; the model's schedule is checked when it samples
        except ValueError as error:
            raise ValueError(f"{path}: generation.scheduler: {error}") from None
    if generation["dtype"] not in (None, "fp32", "fp16", "bf16"):
        raise ValueError(f"{path}: generation.dtype must be fp32, fp16, bf16 or null, got {generation['dtype']!r}")
    if not isinstance(generation["seed"], int):
        raise ValueError(f"{path}: generation.seed must be an integer, got {generation['seed']!r}")


def _check_settings(path: str, joint: dict, arms: List[Arm], students: List[dict], teacher: dict) -> None:
    """Build each section's argument objects once, so their own checks run before anything is written."""

    student_type, training_type = _student_types()
    checks = [
        (f"joint (arm {arm.name})", JointTrainingArguments, joint_settings(joint, arm))
        for arm in arms
        if arm.uses_generated
    ]
    entries = [(f"students[{i}]", s, "real") for i, s in enumerate(students)]
    entries += [  # an arm's student overrides, on every student they apply to, in the arm's mode
        (f"students[{i}] (arm {arm.name})", {**s, **arm.student}, arm.mode)
        for arm in arms
        if arm.student
        for i, s in enumerate(students)
    ]
    for where, settings, mode in entries + ([("teacher", teacher, "real")] if any(a.teacher for a in arms) else []):
        student, training = split_student_settings(settings)
        checks += [
            # a stand-in generated path where the mode needs one: the runner gives the real one
            (where, student_type, {**student, "mode": mode, "generated": [] if mode == "real" else [os.devnull]}),
            (where, training_type, {**training, "output_dir": os.devnull}),
        ]
    for where, kind, values in checks:
        try:
            kind(**values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {where}: {error}") from None


def effective_joint_setting(joint: Dict[str, Any], key: str) -> Any:
    """A joint setting as training will use it (the field's default where the file is silent;
    `balancing_factor` as `balancing_choice` reads it, the rule training applies)."""

    value = joint.get(key, next(f.default for f in dataclasses.fields(JointTrainingArguments) if f.name == key))
    if key == "balancing_factor":
        return balancing_choice(value, joint.get("init_from"))
    return value


def joint_settings(joint: Dict[str, Any], arm: Arm) -> Dict[str, Any]:
    """The arm's joint-model settings; an override that changes nothing is left out, so arms
    that train the same model (e.g. `dakter-kd` and `b-snr`) share one step."""
    merged = {**joint, **arm.joint}

    def effective(settings: Dict[str, Any], key: str) -> str:
        return str(effective_joint_setting(settings, key)).lower()

    return {**joint, **{k: v for k, v in arm.joint.items() if effective(joint, k) != effective(merged, k)}}


def student_name(settings: Dict[str, Any]) -> str:
    """The student model a students:/teacher: entry trains (train_student.py's default where it is silent)."""
    student_type, _ = _student_types()
    return settings.get("student", next(f.default for f in dataclasses.fields(student_type) if f.name == "student"))


def split_student_settings(settings: Dict[str, Any]) -> tuple:
    """A student's config dict -> (StudentArguments kwargs, StudentTrainingArguments kwargs)."""
    student_type, training_type = _student_types()
    own = {f.name for f in dataclasses.fields(student_type)}
    return {k: v for k, v in settings.items() if k in own}, {k: v for k, v in settings.items() if k not in own}
