"""Segment tab: a student on an uploaded scene of any size, and the files to take away.

Pure functions (no Gradio objects). The scene is read by `scene_io` (size refused
from the header above the pixel limit; grey levels mapped as the student's training
data were, by the reader `dakter segment` uses), segmented by `students.segment.segment_array`
(overlapping windows at the student's resolution, Hann-blended by `dakter_hf.students.tiling`,
the same code as `dakter segment`), and summarised: oil-covered fraction of the valid
pixels, and the oil area when the pixel spacing is known, both in total and counting only
the oil pixels whose oil probability reaches a confidence the user picks. The uncertainty
map is the entropy of the blended class probabilities (`students.segment.entropy_map`),
shown with a colour bar and written as a GeoTIFF beside the oil probability.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import numpy as np

from dakter_hf.data.features import oil_class_index
from dakter_hf.data.geotiff import write_probability_geotiff
from dakter_hf.data.visualize import PALETTE
from dakter_hf.space.figures import display_overlay, probability_panel, uncertainty_panel
from dakter_hf.space.scene_io import Scene, read_scene, write_mask_png
from dakter_hf.students.segment import class_mask, entropy_map, segment_array
from dakter_hf.students.tiling import plan_tiles


OVERLAP = 0.25
CONFIDENCE = 0.9  # default oil probability a pixel needs to count in the confident oil area
Progress = Callable[..., None]


@dataclass
class SegmentResult:
    overlay: np.ndarray  # RGB uint8 for display (long side <= 1024 px)
    probabilities: np.ndarray  # per-class probability maps + colour bar (display)
    oil_percent: float  # oil-covered share of the valid pixels, in %
    oil_area_km2: Optional[float]  # None without a pixel spacing
    mask_path: str  # palette PNG, pixel = class id, 255 = no data
    geotiff_path: str  # float32 oil probability, input's georeferencing
    status: str
    uncertainty: np.ndarray  # entropy map + colour bar (display)
    uncertainty_path: str  # float32 entropy (nats), input's georeferencing
    confidence: float  # the oil probability the confident area asks for
    confident_percent: float  # share of the valid pixels that are oil with p(oil) >= confidence, in %
    confident_area_km2: Optional[float]  # None without a pixel spacing


def choose_spacing(scene: Scene, spacing_m) -> Tuple[Optional[Tuple[float, float]], str]:
    """The pixel spacing to use: the user's number (metres, square pixels) wins over the file's."""
    if spacing_m not in (None, "") and float(spacing_m) != 0:
        value = float(spacing_m)
        if not 0 < value <= 100_000:
            raise ValueError(
                f"Pixel spacing must be a positive number of metres (up to 100 km); got {spacing_m!r}. "
                "Leave it empty to use the file's."
            )
        return (value, value), "as entered"
    return scene.pixel_spacing, scene.spacing_note or "no pixel spacing in the file"


def window_count(height: int, width: int, scale: float, window: int) -> int:
    """How many windows `segment_array` will run (for the status line)."""
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    return len(plan_tiles(h, w, window, overlap=OVERLAP).origins)


def segment(
    path: str,
    student,
    spacing_m,
    max_pixels: Optional[int],
    workdir: str,
    progress: Optional[Progress] = None,
    confidence: float = CONFIDENCE,
) -> SegmentResult:
    """Segment the file at `path` with `student` (a `models.LoadedStudent`) and write the downloads into `workdir`.

    `confidence`: the oil probability an oil pixel needs to count in the confident oil area (0.5 to 1).
    """
    confidence = CONFIDENCE if confidence in (None, "") else float(confidence)
    if not 0.5 <= confidence <= 1:
        raise ValueError(f"The confidence must be between 0.5 and 1 (an oil probability); got {confidence!r}.")
    if progress:
        progress(0.02, desc="reading the scene")
    scene = read_scene(path, max_pixels, student.normalization)  # the grey mapping the student learnt on
    spacing, spacing_note = choose_spacing(scene, spacing_m)
    height, width = scene.grey.shape
    windows = window_count(height, width, student.pixel_scale, student.resolution)
    if progress:
        progress(0.1, desc=f"segmenting: {windows} windows of {student.resolution} px")
    probabilities = segment_array(
        scene.grey, student.model, student.processor, overlap=OVERLAP, batch_size=16, device="cpu"
    )
    if progress:
        progress(0.9, desc="writing the mask and the GeoTIFF")
    oil = oil_class_index(student.class_names)
    mask = class_mask(probabilities, scene.valid)  # as `dakter segment` writes it: NODATA_ID at no-data pixels
    valid = scene.valid_count
    oil_pixels = int((mask == oil).sum())
    oil_percent = 100.0 * oil_pixels / valid if valid else 0.0
    area = oil_pixels * spacing[0] * spacing[1] / 1e6 if spacing else None
    confident_pixels = int(((mask == oil) & (probabilities[oil] >= confidence)).sum())
    confident_percent = 100.0 * confident_pixels / valid if valid else 0.0
    confident_area = confident_pixels * spacing[0] * spacing[1] / 1e6 if spacing else None
    entropy = entropy_map(probabilities)  # of the blended probabilities (the windows were blended first)
    if scene.valid is not None:
        entropy[~scene.valid] = np.nan

    stem = os.path.splitext(os.path.basename(path))[0][:60] or "scene"
    mask_path = write_mask_png(os.path.join(workdir, f"{stem}_mask.png"), mask, PALETTE)
    geotiff_path = write_probability_geotiff(
        os.path.join(workdir, f"{stem}_oil_probability.tif"), probabilities[oil], scene.geotags, scene.valid
    )
    uncertainty_path = write_probability_geotiff(
        os.path.join(workdir, f"{stem}_uncertainty.tif"), entropy, scene.geotags, scene.valid
    )

    shown_probabilities = probabilities if scene.valid is None else np.where(scene.valid, probabilities, 0)
    if area is not None:
        area_text = f"{area:.4g} km² (pixel spacing {spacing[0]:.3g} x {spacing[1]:.3g} m, {spacing_note})"
    else:
        area_text = f"unknown ({spacing_note}; enter the pixel spacing in metres)"
    confident_area_text = "" if confident_area is None else f", {confident_area:.4g} km²"
    nodata_text = f", {height * width - valid:,} no-data pixels left out" if scene.valid is not None else ""
    status = (
        f"**{student.name}** on {scene.description}{nodata_text}: {windows} windows of {student.resolution} px, "
        f"{int(OVERLAP * 100)} % overlap, Hann-blended.  \n"
        f"Oil (`{student.class_names[oil]}`): **{oil_percent:.2f} %** of the scene in total; area {area_text}.  \n"
        f"Confident oil (p(oil) ≥ {confidence:.2f}): **{confident_percent:.2f} %**{confident_area_text}. "
        f"Mean uncertainty {float(np.nanmean(entropy)) if valid else float('nan'):.3f} nats "
        f"(max ln {len(student.class_names)} = {np.log(len(student.class_names)):.3f})."
    )
    return SegmentResult(
        overlay=display_overlay(scene.grey, mask),
        probabilities=probability_panel(shown_probabilities, student.class_names),
        oil_percent=round(oil_percent, 4),
        oil_area_km2=None if area is None else round(area, 6),
        mask_path=mask_path,
        geotiff_path=geotiff_path,
        status=status,
        uncertainty=uncertainty_panel(entropy, len(student.class_names)),
        uncertainty_path=uncertainty_path,
        confidence=confidence,
        confident_percent=round(confident_percent, 4),
        confident_area_km2=None if confident_area is None else round(confident_area, 6),
    )
