"""Text of the Space: the header warning and the About tab (method, models, paper)."""

from __future__ import annotations

from dakter_hf.space.models import SpaceModels, display_spec, training_data_text


PAPER_TITLE = (
    "Diffusion-based Data Augmentation and Knowledge Distillation with Generated Soft Labels "
    "Solving Data Scarcity Problems of SAR Oil Spill Segmentation"
)
PAPER_URL = "https://arxiv.org/abs/2412.08116"
PROJECT_URL = "https://kaist-viclab.github.io/DAKTer-site/"

METHOD = """\
1. A diffusion model (a UNet with 1 + C channels) learns SAR images **together with** their per-pixel class labels.
2. An SNR balancing factor *b* = sqrt(P(x₀) / P(y₀)) scales the label channels, so image and label are noised alike.
3. Sampling (DDIM, or any diffusers scheduler) gives an image and the label logits: a **soft label**
   (class probabilities per pixel) whose argmax is the mask.
4. The generated image/soft-label pairs enlarge a small labelled data set.
5. A segmentation student learns real masks (CE + Dice) and the soft labels by knowledge distillation
   (KD at T = 2), with no teacher network.
"""


def header_markdown(models: SpaceModels) -> str:
    lines = [
        "# DAKTer: SAR oil-spill images with soft labels",
        "Generate SAR scenes together with per-pixel soft labels, or segment your own SAR image with a student "
        "trained the DAKTer way.",
    ]
    synthetic = models.pipeline_default or any(s.default for s in models.students.values())
    if synthetic:
        lines.append(
            "> ⚠️ **The default models learnt from synthetic data only** (simulated SAR scenes, not real satellite "
            "images). "
            "They show how the method works; do not use their masks for real oil-spill monitoring. "
            "Start the Space with your own models (`DAKTER_PIPELINE`, `DAKTER_STUDENTS`) for real use."
        )
    return "\n\n".join(lines)


def about_markdown(models: SpaceModels, pixel_limit: str) -> str:
    pipe = models.pipeline
    size = pipe.unet.config.sample_size
    rows = ["| role | id / path | b | classes | input | training data |", "|---|---|---|---|---|---|"]
    cells = [
        (
            "generator (DAKTer pipeline)",
            display_spec(models.pipeline_spec),
            f"{float(pipe.config.balancing_factor):.4f}",
            pipe.config.class_names,
            f"{size} x {size} px",
            training_data_text(models.pipeline_card, models.pipeline_default),
        ),
    ]
    for student in models.students.values():
        size = f"{student.model.num_parameters() / 1e6:.2f} M params"
        role = f"student `{student.name}` ({student.model.config.model_type}, {size})"
        cells.append(
            (
                role,
                display_spec(student.spec),
                "–",
                student.class_names,
                f"{student.resolution} px windows",
                training_data_text(student.card, student.default, student=True),
            )
        )
    rows += [
        f"| {role} | `{where}` | {b} | {', '.join(classes)} | {size_text} | {data} |"
        for role, where, b, classes, size_text, data in cells
    ]
    return "\n".join(
        [
            "## The method in five lines",
            METHOD,
            "## Loaded models",
            "\n".join(rows),
            "",
            "*b* is the balancing factor the generator was trained with. Students segment scenes in overlapping "
            "windows at their input size, blended with a Hann weight (no seams).",
            f"Segment limits: {pixel_limit} per scene. Grey levels are mapped as the student's training data were "
            "(default: 8-bit images as stored; 16-bit and float images stretched from the 1st-99th percentile of "
            "their valid pixels).",
            "",
            "## Paper",
            f"[{PAPER_TITLE}]({PAPER_URL}) (Moon, Yun, Kim, Lee, Kim; arXiv:2412.08116). Project page: {PROJECT_URL}",
            "",
            "The Space runs the `dakter-hf` package (a diffusers pipeline and transformers students). Every button is "
            "also an API endpoint (`/generate`, `/segment`, `/example_scene`) for `gradio_client`.",
        ]
    )
