"""Generate tab: sample image/soft-label pairs from a DAKTer pipeline and package them.

A pure function of its inputs (no Gradio objects): the UI wires it to widgets, the
tests call it directly. Sample i always uses `torch.Generator().manual_seed(seed + i)`,
as `dakter generate` does, so a sample is the same whatever the number asked for, and
the Space's samples can be reproduced from the command line.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np
import torch
from PIL import Image

from dakter_hf.data.visualize import PALETTE
from dakter_hf.generation.schedulers import with_scheduler
from dakter_hf.space.figures import overlay, probability_panel, resize_for_display
from dakter_hf.utils.files import atomic_write


# label -> `dakter_hf.generation.schedulers` name; DPM-Solver++ reaches DDIM-200's quality in about 25 steps
SAMPLERS = {"DDIM": "ddim", "DPM-Solver++": "dpm++", "UniPC": "unipc", "Euler": "euler"}
MAX_SAMPLES, MAX_STEPS = 16, 1000
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.1, 10.0
CHUNK = 4  # samples per pipeline call: progress updates between chunks, results independent of it

Progress = Callable[..., None]


@dataclass
class GenerateResult:
    images: List[tuple]  # (display RGB uint8, caption)
    overlays: List[tuple]  # argmax mask over the image
    probabilities: List[tuple]  # per-class probability maps + colour bar
    zip_path: str
    status: str


def check_generate_inputs(seed, num_samples, steps, sampler, temperature) -> tuple:
    """Validated (seed, n, steps, temperature); a ValueError naming the bad control otherwise."""
    if sampler not in SAMPLERS:
        raise ValueError(f"Sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}.")
    values = []
    for name, value, low, high in (
        ("Seed", seed, 0, 2**31 - 1),
        ("Number of samples", num_samples, 1, MAX_SAMPLES),
        ("Steps", steps, 1, MAX_STEPS),
    ):
        if value is None or float(value) != int(float(value)) or not low <= int(float(value)) <= high:
            raise ValueError(f"{name} must be a whole number from {low} to {high}; got {value!r}.")
        values.append(int(float(value)))
    if temperature is None or not MIN_TEMPERATURE <= float(temperature) <= MAX_TEMPERATURE:
        raise ValueError(
            f"Soft-label temperature must be between {MIN_TEMPERATURE} and {MAX_TEMPERATURE}; got {temperature!r}."
        )
    return values[0], values[1], values[2], float(temperature)


def softmax_t(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) over axis 1: (B, C, H, W) -> probabilities."""
    scaled = logits.astype(np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def sample(pipe, seed: int, num_samples: int, steps: int, progress: Optional[Progress] = None, sampler: str = "DDIM"):
    """(images (B, H, W) in [0, 1], soft labels (B, C, H, W) logits or None, masks (B, H, W))."""

    pipe = with_scheduler(pipe, SAMPLERS.get(sampler, "ddim"))
    pipe.set_progress_bar_config(disable=True)
    images, soft, masks = [], [], []
    for start in range(0, num_samples, CHUNK):
        count = min(CHUNK, num_samples - start)
        if progress:
            progress(
                start / num_samples,
                desc=f"sampling {start + 1}-{start + count} of {num_samples} ({steps} {sampler} steps)",
            )
        generators = [torch.Generator().manual_seed(seed + start + i) for i in range(count)]
        out = pipe(batch_size=count, num_inference_steps=steps, generator=generators, output_type="np")
        images.append(out.images[..., 0])
        masks.append(out.masks)
        if out.soft_labels is not None:
            soft.append(out.soft_labels)
    return np.concatenate(images), (np.concatenate(soft) if soft else None), np.concatenate(masks)


def generate(
    pipe,
    seed,
    num_samples,
    steps,
    sampler,
    temperature,
    workdir: str,
    pipeline_name: str = "",
    progress: Optional[Progress] = None,
) -> GenerateResult:
    """Sample, draw, and write one zip with image PNG, mask PNG and soft-label .npy per sample."""
    seed, num_samples, steps, temperature = check_generate_inputs(seed, num_samples, steps, sampler, temperature)
    class_names = list(pipe.config.class_names)
    images, soft, masks = sample(pipe, seed, num_samples, steps, progress, sampler)
    if progress:
        progress(0.95, desc="drawing and packing")
    greys = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
    if soft is not None:
        probabilities = softmax_t(soft, temperature)
    else:  # L2-label baselines have no logits: show the one-hot masks
        probabilities = np.stack([(masks == c) for c in range(len(class_names))], axis=1).astype(np.float64)
    shown_images, shown_overlays, shown_probs = [], [], []
    for i in range(num_samples):
        caption = f"seed {seed + i}"
        shown_images.append((resize_for_display(greys[i]), caption))
        shown_overlays.append((resize_for_display(overlay(greys[i], masks[i])), caption))
        shown_probs.append((probability_panel(probabilities[i], class_names, title=f"T = {temperature:g}"), caption))
    zip_path = write_samples_zip(
        os.path.join(workdir, f"dakter_samples_seed{seed}_n{num_samples}.zip"),
        greys,
        masks,
        soft,
        seeds=[seed + i for i in range(num_samples)],
        info={
            "pipeline": pipeline_name,
            "sampler": sampler,
            "num_inference_steps": steps,
            "eta": 0.0,
            "class_names": class_names,
            "balancing_factor": float(pipe.config.balancing_factor),
            "display_temperature": temperature,
            "soft_label": "float32 logits (C, H, W); class probabilities = softmax(logits / T)"
            if soft is not None
            else "none (model trained with L2 labels)",
            "mask": "PNG, pixel value = class id (argmax of the logits)",
        },
    )
    oil = masks.astype(bool).mean() if len(class_names) == 2 else None
    share = f"; pixels of class `{class_names[1]}`: {100 * oil:.1f} %" if oil is not None else ""
    size = f"{greys.shape[2]} x {greys.shape[1]} px"
    status = (
        f"Generated {num_samples} sample(s) of {size} with {steps} {sampler} steps from seed {seed}{share}. "
        f"Probability maps at T = {temperature:g}."
    )
    return GenerateResult(shown_images, shown_overlays, shown_probs, zip_path, status)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_samples_zip(
    path: str, greys: np.ndarray, masks: np.ndarray, soft: Optional[np.ndarray], seeds: List[int], info: dict
) -> str:
    """The download: sample_XX_image.png, sample_XX_mask.png, sample_XX_soft_label.npy, generation.json."""
    with atomic_write(path, "wb") as handle, zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for i, seed in enumerate(seeds):
            stem = f"sample_{i:02d}_seed{seed}"
            archive.writestr(f"{stem}_image.png", _png_bytes(Image.fromarray(greys[i], mode="L")))
            mask = Image.fromarray(masks[i].astype(np.uint8), mode="P")
            mask.putpalette(PALETTE.reshape(-1).tolist())
            archive.writestr(f"{stem}_mask.png", _png_bytes(mask))
            if soft is not None:
                buffer = io.BytesIO()
                np.save(buffer, soft[i].astype(np.float32))
                archive.writestr(f"{stem}_soft_label.npy", buffer.getvalue())
        archive.writestr("generation.json", json.dumps({**info, "seeds": seeds}, indent=2) + "\n")
    return path
