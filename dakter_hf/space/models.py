"""Which models the Space serves: arguments, then environment variables, then the committed defaults.

    --pipeline / DAKTER_PIPELINE    a DAKTerPipeline folder or Hub id
    --students / DAKTER_STUDENTS    comma-separated student folders or Hub ids
    neither                         DEFAULT_ROOT/pipeline and DEFAULT_ROOT/student-* (spaces/models/),
                                    small models trained on synthetic scenes by spaces/make_default_models.py

Everything is loaded once at start-up, so a wrong path fails there with a clear
message instead of on a user's first click.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import yaml

from dakter_hf.generation.loading import load_pipeline
from dakter_hf.students.models import load_student, student_resolution
from dakter_hf.students.segment import student_normalization, training_pixel_scale


PIPELINE_ENV, STUDENTS_ENV = "DAKTER_PIPELINE", "DAKTER_STUDENTS"
SYNTHETIC_NOTE = (
    "synthetic SAR scenes (`dakter_hf.data.simulate`), made by `spaces/make_default_models.py`: not real data"
)


@dataclass
class ModelSpecs:
    pipeline: str
    students: List[str]
    default_root: Optional[str] = None

    def is_default(self, spec: str) -> bool:
        """True for the committed default models (trained on synthetic scenes)."""
        if not self.default_root or not os.path.isdir(spec):
            return False
        return os.path.commonpath([os.path.abspath(spec), os.path.abspath(self.default_root)]) == os.path.abspath(
            self.default_root
        )


@dataclass
class LoadedStudent:
    name: str
    spec: str
    model: object
    processor: object
    resolution: int
    pixel_scale: float
    class_names: List[str]
    normalization: object = None  # sar_image.Normalization the student was trained with
    card: dict = field(default_factory=dict)
    default: bool = False


@dataclass
class SpaceModels:
    pipeline: object
    pipeline_spec: str
    pipeline_card: dict
    pipeline_default: bool
    students: Dict[str, LoadedStudent]


def default_students(root: str) -> List[str]:
    if not os.path.isdir(root):
        return []
    return [
        os.path.join(root, name)
        for name in sorted(os.listdir(root))
        if name.startswith("student-") and os.path.isdir(os.path.join(root, name))
    ]


def resolve_specs(
    pipeline: Optional[str] = None,
    students: Optional[str] = None,
    default_root: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
) -> ModelSpecs:
    """Pick the model specs; a FileNotFoundError saying what to pass when nothing is found."""
    env = os.environ if env is None else env
    pipeline = pipeline or env.get(PIPELINE_ENV) or None
    student_list = students if students is not None else env.get(STUDENTS_ENV)
    chosen = [s.strip() for s in student_list.split(",") if s.strip()] if student_list else []
    if pipeline is None and default_root:
        pipeline = os.path.join(default_root, "pipeline")
    if not chosen and default_root:
        chosen = default_students(default_root)
    if not pipeline or not chosen:
        where = f" and nothing in {default_root}" if default_root else ""
        raise FileNotFoundError(
            f"no models given{where}: pass --pipeline/--students (or set {PIPELINE_ENV}/{STUDENTS_ENV}), or run "
            "`python spaces/make_default_models.py`"
        )
    return ModelSpecs(pipeline=pipeline, students=chosen, default_root=default_root)


def read_card(spec: str) -> dict:
    """The `dakter` block of a model card's YAML header (local README.md, or the Hub's if cached); {} if none."""
    path = os.path.join(spec, "README.md")
    if not os.path.isfile(path):
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(spec, "README.md")
        except Exception:  # offline, private or no card: the About tab says "not recorded"
            return {}
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if not text.startswith("---"):
        return {}
    try:
        header = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return {}
    return header.get("dakter", {}) if isinstance(header, dict) else {}


def _student_name(spec: str, taken: Dict[str, LoadedStudent]) -> str:
    name = os.path.basename(os.path.normpath(spec)) if os.path.isdir(spec) else spec
    base, index = name, 2
    while name in taken:
        name, index = f"{base} ({index})", index + 1
    return name


def load_models(specs: ModelSpecs) -> SpaceModels:
    """Load the pipeline and every student on the CPU (the Space's hardware)."""
    pipeline = load_pipeline(specs.pipeline, device="cpu")
    students: Dict[str, LoadedStudent] = {}
    for spec in specs.students:
        model, processor = load_student(spec)
        resolution = student_resolution(model, processor)
        if not resolution:
            raise ValueError(f"student {spec}: no input size recorded (processor size or config.dakter_resolution)")
        class_names = [model.config.id2label[i] for i in range(len(model.config.id2label))]
        name = _student_name(spec, students)
        students[name] = LoadedStudent(
            name,
            spec,
            model.eval(),
            processor,
            resolution,
            training_pixel_scale(model),
            class_names,
            student_normalization(model),
            read_card(spec),
            specs.is_default(spec),
        )
    return SpaceModels(pipeline, specs.pipeline, read_card(specs.pipeline), specs.is_default(specs.pipeline), students)


def display_spec(spec: str) -> str:
    """A folder relative to the working folder when inside it (readers can find it; no server paths), else as is."""
    if os.path.isdir(spec):
        relative = os.path.relpath(os.path.abspath(spec))
        return relative if not relative.startswith("..") else os.path.basename(os.path.normpath(spec))
    return spec


def training_data_text(card: dict, default: bool, student: bool = False) -> str:
    """What a model learnt from, for the About tab."""
    if student and card:
        generated = ", ".join(f"`{g}`" for g in card.get("generated") or []) or "none"
        real = f"real `{card.get('real')}` ({card.get('num_real_images', '?')} images)"
        text = f"{real}, generated {generated} ({card.get('num_generated_images', 0)}), arm `{card.get('mode')}`"
    elif card:
        text = f"`{card.get('data')}` ({card.get('num_train_images', '?')} images)"
    else:
        text = "not recorded in the model card"
    return f"{SYNTHETIC_NOTE}; {text}" if default else text
