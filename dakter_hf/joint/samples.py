"""Sample grids logged during joint training: image | oil probability | mask, to TensorBoard."""

from __future__ import annotations

import numpy as np
import torch

from dakter_hf.data.features import oil_class_index
from dakter_hf.data.visualize import softmax_probability, triplet_grid
from dakter_hf.joint.checkpoints import build_pipeline


def log_samples(accelerator, unet, ema, objective, class_names, balance, args, step) -> None:
    """A grid of image | oil probability | mask to TensorBoard."""

    model = accelerator.unwrap_model(unet)
    if ema is not None:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    was_training = model.training
    model.eval()
    pipeline = build_pipeline(model, objective, class_names, balance)
    pipeline.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(args.seed + i) for i in range(args.num_sample_images)]
    out = pipeline(
        batch_size=args.num_sample_images,
        num_inference_steps=args.sample_inference_steps,
        generator=generators,
        output_type="np",
    )
    probabilities = (
        softmax_probability(out.soft_labels, oil_class_index(class_names)) if out.soft_labels is not None else None
    )
    grid = np.asarray(triplet_grid(out.images[..., 0], out.masks, probabilities))
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples", grid, step, dataformats="HWC")
    if was_training:
        model.train()
    if ema is not None:
        ema.restore(model.parameters())
