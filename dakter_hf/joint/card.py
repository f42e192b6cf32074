"""Model card (README.md with Hub metadata) for a trained DAKTer pipeline."""

from __future__ import annotations

import dataclasses
import json
import os

import yaml

from dakter_hf.utils.files import atomic_write_text


CARD_TEMPLATE = """---
{metadata}---

# DAKTer joint SAR image + soft-label diffusion model

A `UNet2DModel` trained with the DAKTer objective (Algorithm 1 of *Diffusion-based Data
Augmentation and Knowledge Distillation with Generated Soft Labels Solving Data Scarcity
Problems of SAR Oil Spill Segmentation*) to generate {resolution}x{resolution} SAR images together
with per-pixel soft labels over {num_classes} classes: {class_list}.

| | |
|---|---|
| training data | `{data}` (split `{split}`, {num_images} images) |
| balancing factor b | {b:.4f} ({b_how}) |
| label loss / encoding | {label_loss} / {label_encoding} |
| image parameterisation | {image_prediction} |
| schedule | linear betas, {timesteps} steps{zero_snr} |
| UNet | preset `{preset}`, {parameters:.2f} M parameters |
| steps x batch | {steps} x {batch} |

## Use

```python
from dakter_hf import DAKTerPipeline  # or DiffusionPipeline.from_pretrained(..., trust_remote_code=True)

pipe = DAKTerPipeline.from_pretrained("{repo}")
out = pipe(batch_size=4, num_inference_steps=200)
out.images       # SAR images
out.soft_labels  # (B, C, H, W) logits: the soft labels
out.masks        # argmax masks
```

## Training arguments

```json
{arguments}
```
"""


def write_model_card(
    directory: str, args, class_names, balance, objective, unet, run, display_path: str = None
) -> str:
    """Write README.md (with Hub metadata) next to model_index.json.

    `balance` is the run's `joint.balance.Balance`. `run` holds what actually happened:
    {"steps", "batch" (global, with accumulation), "num_train_images"}. `display_path`: the folder's
    final path, shown in the card when it is written into a temporary folder first.
    """
    metadata = {
        "library_name": "diffusers",
        "license": "apache-2.0",
        "pipeline_tag": "unconditional-image-generation",
        "tags": ["dakter", "sar", "oil-spill", "diffusion", "soft-labels", "remote-sensing", "image-segmentation"],
        "dakter": {
            "data": args.data,
            "num_train_images": run["num_train_images"],
            "num_classes": len(class_names),
            "class_names": list(class_names),
            "balancing_factor": round(balance.b, 6),
            "balance_resolution": balance.resolution,
            "unet_preset": args.unet_preset,
            "resolution": args.resolution,
        },
    }
    text = CARD_TEMPLATE.format(
        metadata=yaml.safe_dump(metadata, sort_keys=False),
        resolution=unet.config.sample_size,
        num_classes=len(class_names),
        class_list=", ".join(f"{i} = {n}" for i, n in enumerate(class_names)),
        data=args.data,
        split=args.split,
        num_images=run["num_train_images"],
        b=balance.b,
        b_how=balance.how,
        label_loss=objective.label_loss,
        label_encoding=objective.label_encoding,
        image_prediction=objective.image_prediction_type,
        timesteps=objective.scheduler.config.num_train_timesteps,
        zero_snr=", rescaled to zero terminal SNR" if objective.zero_terminal_snr else "",
        preset=args.unet_preset if not args.init_from else f"{args.unet_preset} (weights from {args.init_from})",
        parameters=unet.num_parameters() / 1e6,
        steps=run["steps"],
        batch=run["batch"],
        repo=args.hub_model_id or display_path or directory,
        arguments=json.dumps(dataclasses.asdict(args), indent=2),
    )
    return atomic_write_text(os.path.join(directory, "README.md"), text)
