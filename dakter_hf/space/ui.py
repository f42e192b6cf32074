"""The Space's `gr.Blocks`: three tabs wired to the pure functions of this package.

Every event has an `api_name`, so `gradio_client` can drive all of it. Errors a user
can cause come back as `gr.Error` messages (shown in the page); anything else is
logged on the server and reported in one line, never as a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from typing import Optional

import gradio as gr

from dakter_hf.errors import DataError
from dakter_hf.space import generate_tab, segment_tab
from dakter_hf.space.about import about_markdown, header_markdown
from dakter_hf.space.examples import write_example_scene
from dakter_hf.space.figures import legend_html
from dakter_hf.space.models import SpaceModels, display_spec
from dakter_hf.space.options import DEFAULT_MAX_PIXELS, MAX_UPLOAD


logger = logging.getLogger(__name__)
KEEP_OUTPUTS_S = 3600  # request folders older than this are deleted at the next request
SCENE_TYPES = [".jpg", ".jpeg", ".png", ".tif", ".tiff"]


@contextlib.contextmanager
def page_errors():
    """Turn exceptions into one-line `gr.Error` messages for the page."""
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, OSError, DataError) as error:  # bad inputs: the message says what to change
        raise gr.Error(str(error), print_exception=False) from None
    except Exception as error:  # a bug: keep the traceback for the log, not for the user
        logger.exception("Space callback failed")
        raise gr.Error(
            f"Something went wrong ({type(error).__name__}); the details are in the server log.", print_exception=False
        ) from None


def request_folder(workdir: str) -> str:
    """A fresh folder for one request's downloads; old ones are pruned so the disk does not fill."""
    now = time.time()
    for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        if name.startswith("request-") and now - os.path.getmtime(path) > KEEP_OUTPUTS_S:
            shutil.rmtree(path, ignore_errors=True)
    return tempfile.mkdtemp(prefix="request-", dir=workdir)


def _gallery(label, elem_id, columns=4, height=300):
    """A PNG gallery of whole images (no cropping)."""
    return gr.Gallery(label=label, columns=columns, height=height, object_fit="contain", format="png", elem_id=elem_id)


def _picture(label, elem_id):
    """A read-only PNG image output."""
    return gr.Image(label=label, type="numpy", format="png", interactive=False, elem_id=elem_id)


def _readout(label, elem_id):
    """A read-only number."""
    return gr.Number(label=label, interactive=False, elem_id=elem_id)


def _download(label, elem_id):
    """A short file box for one download."""
    return gr.File(label=label, height=110, elem_id=elem_id)


def build_demo(
    models: SpaceModels, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS, workdir: Optional[str] = None
) -> gr.Blocks:
    """The whole app; `workdir` holds the files users download (default: a new temporary folder)."""
    workdir = workdir or tempfile.mkdtemp(prefix="dakter-space-")
    os.makedirs(workdir, exist_ok=True)
    class_names = list(models.pipeline.config.class_names)
    student_names = list(models.students)
    pixel_limit = (
        f"{max_pixels:,} pixels (e.g. {int(max_pixels**0.5)} x {int(max_pixels**0.5)})"
        if max_pixels
        else "no pixel limit"
    )

    def on_generate(seed, num_samples, steps, sampler, temperature, progress=gr.Progress()):
        with page_errors():
            result = generate_tab.generate(
                models.pipeline,
                seed,
                num_samples,
                steps,
                sampler,
                temperature,
                request_folder(workdir),
                pipeline_name=display_spec(models.pipeline_spec),
                progress=progress,
            )
        return result.images, result.overlays, result.probabilities, result.zip_path, result.status

    def on_segment(path, student_name, spacing, confidence=segment_tab.CONFIDENCE, progress=gr.Progress()):
        with page_errors():
            if not path:
                raise ValueError("Upload a SAR image first (JPEG, PNG or TIFF), or load the synthetic example scene.")
            if student_name not in models.students:
                raise ValueError(f"Unknown student {student_name!r}; choose one of {', '.join(student_names)}.")
            result = segment_tab.segment(
                path,
                models.students[student_name],
                spacing,
                max_pixels,
                request_folder(workdir),
                progress=progress,
                confidence=confidence,
            )
        legend = legend_html(models.students[student_name].class_names)
        return (
            result.overlay,
            legend,
            result.probabilities,
            result.oil_percent,
            result.oil_area_km2,
            result.mask_path,
            result.geotiff_path,
            result.status,
            result.uncertainty,
            result.uncertainty_path,
            result.confident_percent,
            result.confident_area_km2,
        )

    def on_example():
        with page_errors():
            return write_example_scene(workdir), 10.0

    with gr.Blocks(title="DAKTer: SAR oil-spill images with soft labels", analytics_enabled=False) as demo:
        gr.Markdown(header_markdown(models))
        with gr.Tab("Generate", id="generate"):
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (sample i uses seed + i)")
                    num_samples = gr.Slider(1, generate_tab.MAX_SAMPLES, value=4, step=1, label="Number of samples")
                    steps = gr.Slider(1, generate_tab.MAX_STEPS, value=50, step=1, label="Sampling steps (paper: 200)")
                    sampler = gr.Dropdown(
                        choices=list(generate_tab.SAMPLERS),
                        value="DDIM",
                        label="Sampler",
                        info="DDIM as in the paper; DPM-Solver++ needs about 25 steps for DDIM-200's quality.",
                    )
                    with gr.Accordion("Advanced", open=False):
                        temperature = gr.Slider(
                            generate_tab.MIN_TEMPERATURE,
                            generate_tab.MAX_TEMPERATURE,
                            value=1.0,
                            step=0.1,
                            label="Soft-label temperature T: maps show softmax(logits / T) (students distil at T = 2)",
                        )
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                    generate_status = gr.Markdown(elem_id="generate-status")
                    samples_zip = _download(
                        "Download all: image PNG, mask PNG, soft labels .npy per sample", "generate-zip"
                    )
                with gr.Column(scale=3):
                    images = _gallery("Generated SAR images", "generated-images")
                    overlays = _gallery("Argmax mask over the image", "generated-overlays")
                    gr.HTML(legend_html(class_names))
                    probabilities = _gallery(
                        "Per-class probability maps (soft labels)", "generated-probabilities", columns=2, height=340
                    )
            generate_button.click(
                on_generate,
                [seed, num_samples, steps, sampler, temperature],
                [images, overlays, probabilities, samples_zip, generate_status],
                api_name="generate",
            )

        with gr.Tab("Segment", id="segment"):
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    scene = gr.File(
                        label="SAR image: JPEG, PNG or TIFF/GeoTIFF (8/16-bit or float32; grey or RGB)",
                        file_types=SCENE_TYPES,
                        type="filepath",
                        elem_id="scene-file",
                    )
                    student = gr.Dropdown(choices=student_names, value=student_names[0], label="Student")
                    spacing = gr.Number(
                        value=None, minimum=0, label="Pixel spacing in metres (empty: read from the GeoTIFF)"
                    )
                    confidence = gr.Slider(
                        0.5,
                        0.99,
                        value=segment_tab.CONFIDENCE,
                        step=0.01,
                        elem_id="segment-confidence",
                        label="Confidence: oil pixels counted in the confident area have p(oil) at least this",
                    )
                    gr.Markdown(
                        f"Scenes up to {pixel_limit}, files up to {MAX_UPLOAD.upper()}. Larger scenes are refused: "
                        "crop or downsample them first."
                    )
                    with gr.Row():
                        example_button = gr.Button("Synthetic example scene", size="sm")
                        segment_button = gr.Button("Segment", variant="primary", elem_id="segment-button")
                    segment_status = gr.Markdown(elem_id="segment-status")
                    with gr.Row():
                        oil_percent = _readout("Oil-covered fraction of the scene (%)", "oil-percent")
                        oil_area = _readout("Oil area (km²)", "oil-area")
                    with gr.Row():
                        confident_percent = _readout(
                            "Confident oil: fraction of the scene (%)", "confident-oil-percent"
                        )
                        confident_area = _readout("Confident oil area (km²)", "confident-oil-area")
                with gr.Column(scale=3):
                    scene_overlay = _picture("Classes over the scene", "segment-overlay")
                    scene_legend = gr.HTML(legend_html(models.students[student_names[0]].class_names))
                    scene_probabilities = _picture("Per-class probability maps", "segment-probabilities")
                    scene_uncertainty = _picture(
                        "Uncertainty: entropy of the class probabilities (nats)", "segment-uncertainty"
                    )
                    with gr.Row():
                        mask_file = _download("Mask PNG (pixel = class id, 255 = no data)", "mask-file")
                        geotiff_file = _download(
                            "Oil probability GeoTIFF (float32, input's georeferencing)", "geotiff-file"
                        )
                        uncertainty_file = _download(
                            "Uncertainty GeoTIFF (entropy in nats, float32, input's georeferencing)",
                            "uncertainty-file",
                        )
            example_button.click(on_example, None, [scene, spacing], api_name="example_scene")
            segment_outputs = [
                scene_overlay,
                scene_legend,
                scene_probabilities,
                oil_percent,
                oil_area,
                mask_file,
                geotiff_file,
                segment_status,
                scene_uncertainty,
                uncertainty_file,
                confident_percent,
                confident_area,
            ]
            segment_inputs = [scene, student, spacing, confidence]
            segment_button.click(on_segment, segment_inputs, segment_outputs, api_name="segment")

        with gr.Tab("About", id="about"):
            gr.Markdown(about_markdown(models, pixel_limit))
    return demo
