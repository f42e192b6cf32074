"""The DAKTer training objective (Algorithm 1), and the paper's baselines by option.

One call: normalise the mask to {-1, 1} codes, scale them by b, draw t and eps,
noise image and labels with the same DDPM scheduler, run the UNet, and return the
image loss (L2 on the chosen target) plus the label loss (CE on logits, or L2 for
the plain-DDPM / SatSynth baselines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from dakter_hf.pipelines.pipeline_dakter import (
    check_label_options,
    encode_labels,
    has_label_timestep,
    joint_forward,
    num_label_channels,
)


PREDICTION_ALIASES = {
    "sample": "sample",
    "x0": "sample",
    "epsilon": "epsilon",
    "eps": "epsilon",
    "v": "v_prediction",
    "v_prediction": "v_prediction",
}


def canonical_prediction_type(name: str) -> str:
    """`v` -> `v_prediction` (diffusers' name); clear error for unknown names."""
    if name not in PREDICTION_ALIASES:
        raise ValueError(f"image prediction type must be one of sample, epsilon, v; got {name!r}")
    return PREDICTION_ALIASES[name]


@dataclass
class JointLossOutput:
    """Total loss and its parts (for logging)."""

    loss: torch.Tensor
    image_loss: torch.Tensor
    label_loss: torch.Tensor
    timesteps: torch.Tensor


class DAKTerObjective:
    """Algorithm 1 with options for the paper's baselines and modern variants.

    Args:
        num_classes: C.
        balancing_factor: b (the SNR value; 1.0 means no balancing).
        label_loss: `ce` (DAKTer) or `l2` (plain DDPM / SatSynth).
        label_encoding: `onehot` or `binary` (SatSynth, ceil(log2 C) bit channels).
        image_prediction_type: `sample` (the paper: predict x0), `epsilon` or `v`.
        snr_gamma: min-SNR-gamma weighting of the image loss (None = off).
        independent_label_timestep: fraction p of samples whose image stays clean (t = 0) while
            their labels get a timestep of their own: the segmenter task behind the `posterior`
            soft labels. Those samples add no image loss (the image is given, not generated).
            Needs a UNet with a label-timestep embedding (`has_label_timestep`). 0: the paper.
        zero_terminal_snr: rescale the linear betas to zero terminal SNR.
        num_train_timesteps, beta_start, beta_end, beta_schedule: the DDPM schedule
            (the paper: linear, 1000 steps).
    """

    def __init__(
        self,
        num_classes: int,
        balancing_factor: float = 1.0,
        label_loss: str = "ce",
        label_encoding: str = "onehot",
        image_prediction_type: str = "sample",
        snr_gamma: Optional[float] = None,
        zero_terminal_snr: bool = False,
        independent_label_timestep: float = 0.0,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
    ):
        check_label_options(label_loss, label_encoding, float(balancing_factor))
        prediction = canonical_prediction_type(image_prediction_type)
        if prediction == "epsilon" and zero_terminal_snr:
            raise ValueError(
                "image_prediction_type='epsilon' cannot be used with zero_terminal_snr: x0 is undefined at the last "
                "step; use 'v' or 'sample'"
            )
        if snr_gamma is not None and snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be > 0 or None, got {snr_gamma}")
        self.num_classes = num_classes
        self.balancing_factor = float(balancing_factor)
        self.label_loss = label_loss
        self.label_encoding = label_encoding
        self.image_prediction_type = prediction
        if not 0.0 <= float(independent_label_timestep) <= 1.0:
            raise ValueError(f"independent_label_timestep must be in [0, 1], got {independent_label_timestep}")
        self.snr_gamma = snr_gamma
        self.independent_label_timestep = float(independent_label_timestep)
        self.zero_terminal_snr = zero_terminal_snr
        self.num_label_channels = num_label_channels(num_classes, label_encoding)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
            rescale_betas_zero_snr=zero_terminal_snr,
            prediction_type=prediction,
            clip_sample=False,
        )

    @property
    def channels(self) -> int:
        """UNet in/out channels: 1 image channel + the label channels."""
        return 1 + self.num_label_channels

    def sampling_scheduler(self) -> DDIMScheduler:
        """The DDIM scheduler the pipeline samples with: same betas, x0 ('sample') steps."""
        return DDIMScheduler.from_config(
            self.scheduler.config,
            prediction_type="sample",
            clip_sample=False,
            thresholding=False,
            timestep_spacing="trailing" if self.zero_terminal_snr else "leading",
        )

    def clean_sample(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """(x0, b * y0): the clean joint sample that gets noised (Algorithm 1, lines 1-2)."""
        return self._clean_and_codes(images, masks)[0]

    def _clean_and_codes(self, images: torch.Tensor, masks: torch.Tensor):
        """(x0, b * y0) and y0, the masks as {-1, 1} label codes (one-hot or binary)."""
        codes = encode_labels(masks, self.num_classes, self.label_encoding).to(images.dtype)
        return torch.cat([images, codes * self.balancing_factor], dim=1), codes

    def __call__(
        self,
        unet: torch.nn.Module,
        images: torch.Tensor,
        masks: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        timesteps: Optional[torch.Tensor] = None,
        noise: Optional[torch.Tensor] = None,
    ) -> JointLossOutput:
        """Loss for a batch: images (B, 1, H, W) in [-1, 1], masks (B, H, W) class ids."""
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be (B, 1, H, W), got {tuple(images.shape)}")
        if masks.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(
                f"masks must be (B, H, W) = {(images.shape[0], *images.shape[2:])}, got {tuple(masks.shape)}"
            )
        batch, device = images.shape[0], images.device
        clean, codes = self._clean_and_codes(images, masks)
        if noise is None:  # drawn where the generator lives, then moved
            noise_device = generator.device if generator is not None else device
            noise = torch.randn(clean.shape, generator=generator, device=noise_device, dtype=clean.dtype).to(device)
        if timesteps is None:
            steps_device = generator.device if generator is not None else device
            timesteps = torch.randint(
                0, self.scheduler.config.num_train_timesteps, (batch,), generator=generator, device=steps_device
            ).to(device)
        label_timesteps, image_weight = None, None
        if self.independent_label_timestep > 0 and not has_label_timestep(unet):
            raise ValueError(
                "independent_label_timestep > 0 needs a UNet with a label-timestep embedding "
                '(class_embed_type="timestep"); this one has one timestep for both modalities'
            )
        if self.independent_label_timestep > 0:  # drawn after noise and t, so p = 0 keeps the paper's draws
            label_timesteps, image_weight = self._segmenter_draws(batch, timesteps, generator)
            image_timesteps = timesteps * image_weight.long()  # the segmenter samples: a clean image, t = 0
            noisy = torch.cat(
                [
                    self.scheduler.add_noise(clean[:, :1], noise[:, :1], image_timesteps),
                    self.scheduler.add_noise(clean[:, 1:], noise[:, 1:], label_timesteps),
                ],
                dim=1,
            )
            timesteps = image_timesteps
        else:
            noisy = self.scheduler.add_noise(clean, noise, timesteps)
        output = joint_forward(unet, noisy, timesteps, label_timestep=label_timesteps)

        image_output, label_output = output[:, :1], output[:, 1:]
        if self.image_prediction_type == "sample":
            target = images
        elif self.image_prediction_type == "epsilon":
            target = noise[:, :1]
        else:
            target = self.scheduler.get_velocity(images, noise[:, :1], timesteps)
        per_sample = F.mse_loss(image_output.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if self.snr_gamma is not None:
            per_sample = per_sample * self._min_snr_weights(timesteps)
        if image_weight is None:
            image_loss = per_sample.mean()
        else:  # the mean over the samples that generate their image (zero when there are none)
            image_loss = (per_sample * image_weight).sum() / image_weight.sum().clamp(min=1)

        if self.label_loss == "ce":
            label_loss = F.cross_entropy(label_output.float(), masks.long())
        else:  # plain DDPM / SatSynth: regress the unscaled {-1, 1} codes
            label_loss = F.mse_loss(label_output.float(), codes.float())
        return JointLossOutput(
            loss=image_loss + label_loss, image_loss=image_loss, label_loss=label_loss, timesteps=timesteps
        )

    def _segmenter_draws(self, batch: int, timesteps: torch.Tensor, generator: Optional[torch.Generator]):
        """Which samples are segmenter samples (probability p), and every sample's label timestep.

        Returns (label timesteps, image weight): a segmenter sample gets a uniform label timestep
        of its own and image weight 0; the others keep t for both modalities and weight 1.
        """
        device = timesteps.device
        draw_device = generator.device if generator is not None else device
        chosen = (
            torch.rand((batch,), generator=generator, device=draw_device).to(device) < self.independent_label_timestep
        )
        own = torch.randint(
            0, self.scheduler.config.num_train_timesteps, (batch,), generator=generator, device=draw_device
        ).to(device)
        return torch.where(chosen, own, timesteps), (~chosen).float()

    def _min_snr_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weights (Hang et al. 2023) for the chosen image target."""
        alphas = self.scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
        snr = alphas / (1 - alphas).clamp(min=1e-12)
        clipped = torch.clamp(snr, max=self.snr_gamma)
        if self.image_prediction_type == "epsilon":
            return clipped / snr.clamp(min=1e-12)
        if self.image_prediction_type == "v_prediction":
            return clipped / (snr + 1)
        return clipped
