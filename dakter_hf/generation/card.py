"""What a generated dataset shows its readers: its columns (features) and its dataset card."""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import datasets

from dakter_hf.generation.config import GenerationConfig
from dakter_hf.utils.files import atomic_write_text


def generated_features(
    class_names: Sequence[str], height: int, width: int, with_soft_labels: bool = True
) -> datasets.Features:
    """Features of a generated dataset: image, soft_label, mask, seed, index, classes."""
    columns = {"image": datasets.Image()}
    if with_soft_labels:
        columns["soft_label"] = datasets.Array3D(shape=(len(class_names), height, width), dtype="float16")
    columns.update(
        {
            "mask": datasets.Image(),
            "seed": datasets.Value("int64"),
            "index": datasets.Value("int64"),
            "classes": datasets.List(datasets.ClassLabel(names=list(class_names))),
        }
    )
    return datasets.Features(columns)


DATASET_CARD = """---
license: {license}
task_categories:
- image-segmentation
tags:
- dakter
- sar
- oil-spill
- synthetic
- soft-labels
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---

# Generated SAR oil-spill images with soft labels (DAKTer)

{num_samples} synthetic {resolution}x{resolution} SAR images with per-pixel soft labels over
{num_classes} classes ({class_list}), sampled from the DAKTer joint diffusion model
`{generator}`. These are **generated** images, not observations.

| | |
|---|---|
| generator | `{generator}` |
| balancing factor b | {b:.4f} |
| label loss / encoding / image parameterisation | {label_loss} / {label_encoding} / {prediction} |
| sampler | {scheduler}, {steps} steps, eta = {eta}, label noise: {label_noise}, {dtype} weights |
| soft labels from | {soft_label_source} |
| seeds | {seeds} |

{curation}## Columns

- `image`: the generated SAR image (grey).
- `soft_label`: {soft_label_text}
- `mask`: the hard mask (argmax of the soft label; class ids).
- `seed`, `index`: reproduce sample `index` with `torch.Generator().manual_seed(seed)`.
- `classes`: class ids present in the mask; its `ClassLabel` holds the class names.

## Load

```python
from datasets import load_dataset
data = load_dataset("parquet", data_dir="data", split="train")  # or load_dataset("<repo id>")
data = data.with_format("torch")
data[0]["soft_label"].shape  # (C, H, W)
```

## Licence

`{license}`. Generated data can carry the terms of the data its generator was trained on;
check them before redistributing.
"""


SOFT_LABEL_TEXT = {
    "final": "the final label logits (the paper, Algorithm 2)",
    "trajectory": "log of the label probabilities averaged over the sampler's last steps (logits whose softmax is "
    "that mean)",
    "posterior": "the joint model's label logits for the finished image, read with the image clean and the labels "
    "noised again",
}


def soft_label_source_text(config: GenerationConfig) -> str:
    """The card's line on where the soft labels come from (`soft_label_source` and its setting)."""
    if config.label_loss != "ce":
        return "none (L2 labels)"
    if config.soft_label_source == "trajectory":
        return f"`trajectory`: mean probability of the last {config.trajectory_steps} sampling steps"
    if config.soft_label_source == "posterior":
        return f"`posterior`: the label head read at label timestep {config.posterior_timestep}, image clean"
    return "`final`: the last sampling step's logits (the paper)"


CURATION_SECTION = """## Curation (`--match-real`)

{num_kept} samples kept of {num_candidates} candidates ({factor:g} x N) so that their per-image {oil} fraction
matches the real training set `{source}` ({real_images} images; fingerprint `{fingerprint}`). The rule: {rule}.
{borrowed} of the kept samples stand in for a stratum short of candidates (the nearest unused ones).

| per-image {oil} fraction | candidates | kept | real (target) |
|---|---|---|---|
| mean | {candidates[mean]:.2%} | {kept[mean]:.2%} | {real[mean]:.2%} |
| images with {oil} | {candidates[images_with_oil]:.1%} | {kept[images_with_oil]:.1%} | {real[images_with_oil]:.1%} |
| KS distance to the real fractions | {candidates[ks_to_real]:.3f} | {kept[ks_to_real]:.3f} | 0 |

`curation.json` holds the kept indices and seeds, the strata and every class's mean fraction.

"""


def seeds_text(base_seed: int, num_samples: int, curation: Optional[Dict]) -> str:
    """Which seeds made the rows: samples 0 .. N - 1, or a curated set's candidates."""
    if not curation:
        return f"sample i uses seed {base_seed} + i ({base_seed} .. {base_seed + num_samples - 1})"
    last = base_seed + curation["num_candidates"] - 1
    return (
        f"candidate i uses seed {base_seed} + i ({base_seed} .. {last}); each kept row carries its `index` and `seed`"
    )


def curation_text(curation: Optional[Dict]) -> str:
    """The card's curation section (empty without curation); `curation` is `curation.curation_record`'s."""
    if not curation:
        return ""
    fractions = curation["oil_fraction"]
    return CURATION_SECTION.format(
        num_kept=curation["num_kept"],
        num_candidates=curation["num_candidates"],
        factor=curation["over_generate"],
        oil=curation["oil_class"],
        source=curation["match_real"],
        real_images=curation["real_images"],
        fingerprint=curation["real_fingerprint"],
        rule=curation["rule"],
        borrowed=curation["borrowed"],
        candidates=fractions["candidates"],
        kept=fractions["kept"],
        real=fractions["real"],
    )


def write_dataset_card(
    out: str, config: GenerationConfig, kl_summary: Optional[Dict], curation: Optional[Dict] = None
) -> str:
    """OUT/README.md: what made the dataset, its columns, how to load it; `kl_summary` is the float16 cost.

    `curation`: what a curated generation (`--match-real`) kept and why (`curation.curation_record`).
    """
    if config.label_loss == "ce":
        soft_label_text = (
            f"{SOFT_LABEL_TEXT[config.soft_label_source]}, float16 `Array3D(C, H, W)` (half the size of float32)."
        )
        if kl_summary:
            soft_label_text += (
                f" Measured cost of float16 on these samples: mean KL(float32 || float16) per pixel at "
                f"T = {kl_summary['temperature']:g} is {kl_summary['mean']:.2e} "
                f"(max per sample {kl_summary['max']:.2e})."
            )
    else:
        soft_label_text = "absent: this generator was trained with L2 labels (a baseline) and has no logits."
    text = DATASET_CARD.format(
        license=config.license,
        num_samples=config.num_samples,
        resolution=config.resolution,
        num_classes=len(config.class_names),
        class_list=", ".join(f"{i} = {n}" for i, n in enumerate(config.class_names)),
        generator=config.generator,
        b=config.balancing_factor,
        label_loss=config.label_loss,
        label_encoding=config.label_encoding,
        prediction=config.image_prediction_type,
        steps=config.num_inference_steps,
        eta=config.eta,
        label_noise=config.label_noise,
        scheduler=config.scheduler,
        dtype=config.dtype,
        seeds=seeds_text(config.base_seed, config.num_samples, curation),
        curation=curation_text(curation),
        soft_label_text=soft_label_text,
        soft_label_source=soft_label_source_text(config),
    )
    return atomic_write_text(os.path.join(out, "README.md"), text)
