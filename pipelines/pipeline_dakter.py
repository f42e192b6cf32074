"""DAKTerPipeline: joint sampling of SAR images and per-pixel soft labels (Algorithm 2).

This file needs only torch and diffusers. `DAKTerPipeline.save_pretrained` copies it
next to `model_index.json`, so a saved pipeline loads three ways:

    DAKTerPipeline.from_pretrained(path)
    DiffusionPipeline.from_pretrained(path, trust_remote_code=True)
    DiffusionPipeline.from_pretrained(path, custom_pipeline="pipeline_dakter", trust_remote_code=True)

It is also the single home of the label codec (how masks become label channels and
back) and of the image-parameterisation conversion (epsilon / v -> x0, and x0 -> what
a scheduler steps on), which the training objective imports, so sampler and loss can
never disagree.

Any diffusers scheduler works, as with diffusers' own pipelines (DDIM is the default):

    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor


LABEL_LOSSES = ("ce", "l2")
LABEL_ENCODINGS = ("onehot", "binary")
IMAGE_PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")
LABEL_NOISE_READINGS = ("consistent", "literal")
SOFT_LABEL_SOURCES = ("final", "trajectory", "posterior")
PIPELINE_FILE_STEM = "pipeline_dakter"


# --------------------------------------------------------------------------- label codec
def num_label_channels(num_classes: int, label_encoding: str = "onehot") -> int:
    """C one-hot channels, or ceil(log2 C) bit channels (SatSynth's binary encoding)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if label_encoding == "onehot":
        return num_classes
    if label_encoding == "binary":
        return max(1, math.ceil(math.log2(num_classes)))
    raise ValueError(f"label_encoding must be one of {LABEL_ENCODINGS}, got {label_encoding!r}")


def label_codebook(num_classes: int, label_encoding: str = "onehot") -> torch.Tensor:
    """(C, K) matrix: row c is the {-1, 1} code of class c."""
    if label_encoding == "onehot":
        return torch.eye(num_classes) * 2 - 1
    bits = num_label_channels(num_classes, label_encoding)
    ids = torch.arange(num_classes)[:, None]
    return ((ids >> torch.arange(bits - 1, -1, -1)[None, :]) & 1).float() * 2 - 1


def encode_labels(mask: torch.Tensor, num_classes: int, label_encoding: str = "onehot") -> torch.Tensor:
    """Class ids (B, H, W) -> label channels in {-1, 1}, (B, K, H, W) (Algorithm 1: y0 = 2*onehot - 1)."""
    codebook = label_codebook(num_classes, label_encoding).to(mask.device)
    return codebook[mask.long()].permute(0, 3, 1, 2).contiguous()


def decode_labels(values: torch.Tensor, num_classes: int, label_encoding: str = "onehot") -> torch.Tensor:
    """Label channels (B, K, H, W) -> class ids (B, H, W) by the nearest class code."""
    if label_encoding == "onehot":
        return values.argmax(dim=1)
    codebook = label_codebook(num_classes, label_encoding).to(device=values.device, dtype=values.dtype)
    distances = ((values[:, None] - codebook[None, :, :, None, None]) ** 2).sum(dim=2)
    return distances.argmin(dim=1)


def label_prediction_to_state(label_output: torch.Tensor, label_loss: str, balancing_factor: float) -> torch.Tensor:
    """Network label output -> clean label estimate in the b-scaled space.

    `ce`: logits -> (softmax * 2 - 1) * b (Algorithm 2). `l2`: the regressed {-1, 1}
    code, clamped, times b.
    """
    if label_loss == "ce":
        return (label_output.softmax(dim=1) * 2 - 1) * balancing_factor
    return label_output.clamp(-1, 1) * balancing_factor


def check_soft_label_options(
    soft_label_source: str, trajectory_steps: int, posterior_timestep: Optional[int] = None
) -> None:
    """Where the soft label comes from (see `DAKTerPipeline.__call__`): clear errors for impossible choices."""
    if soft_label_source not in SOFT_LABEL_SOURCES:
        raise ValueError(f"soft_label_source must be one of {SOFT_LABEL_SOURCES}, got {soft_label_source!r}")
    for name, value, low in (("trajectory_steps", trajectory_steps, 1), ("posterior_timestep", posterior_timestep, 0)):
        if name == "posterior_timestep" and value is None:  # the last training timestep
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")


def has_label_timestep(unet) -> bool:
    """Whether the UNet reads the labels' own noise level (trained with an independent label timestep).

    Such a UNet has diffusers' `class_embed_type="timestep"`: the label timestep enters through the
    class embedding, beside the image's timestep.
    """
    unet = _unwrapped(unet)
    return getattr(getattr(unet, "config", None), "class_embed_type", None) == "timestep"


def _unwrapped(model):
    """The model inside a DDP / torch.compile wrapper (training passes the wrapped UNet)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def _cast_label_timestep_input(unet) -> None:
    """Half-precision weights and a label timestep: diffusers feeds the class embedding a float32 projection
    of the timestep, so a hook (added once) casts the embedding's input to its weights' dtype, whatever
    `.to(dtype)` comes later."""
    embedding = getattr(_unwrapped(unet), "class_embedding", None)
    if embedding is None or getattr(embedding, "_dakter_casts_input", False):
        return

    def cast(module, args):
        return (args[0].to(next(module.parameters()).dtype), *args[1:])

    embedding.register_forward_pre_hook(cast)
    embedding._dakter_casts_input = True


def joint_forward(unet, sample: torch.Tensor, timestep, label_timestep=None) -> torch.Tensor:
    """The joint UNet's output for image timestep `timestep` and label timestep `label_timestep`.

    Training and sampling call the network only through here. A UNet without a label timestep
    (the paper's training: one noise level for both modalities) sees `label_timestep` only when
    it is given, as its one timestep; otherwise `timestep`. A UNet with one (`has_label_timestep`)
    gets the label timestep as its class label (the image's when none is given).
    """
    if not has_label_timestep(unet):
        return unet(sample, timestep if label_timestep is None else label_timestep).sample
    _cast_label_timestep_input(unet)
    label_timestep = timestep if label_timestep is None else label_timestep
    if not torch.is_tensor(label_timestep) or label_timestep.ndim == 0:
        label_timestep = torch.full((sample.shape[0],), int(label_timestep), device=sample.device, dtype=torch.long)
    return unet(sample, timestep, class_labels=label_timestep).sample


# ------------------------------------------------------------- image parameterisation
def image_x0_from_output(
    output: torch.Tensor, noisy: torch.Tensor, alpha_prod_t: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """Turn the image channel's network output into an estimate of the clean image x0.

    sample: the output is x0. epsilon: x0 = (x_t - sqrt(1 - a) * eps) / sqrt(a).
    v_prediction: x0 = sqrt(a) * x_t - sqrt(1 - a) * v. `alpha_prod_t` broadcasts
    against the batch (shape (B, 1, 1, 1) or a scalar).
    """
    if prediction_type == "sample":
        return output
    alpha = alpha_prod_t.to(dtype=output.dtype)
    if prediction_type == "epsilon":
        return (noisy - (1 - alpha).sqrt() * output) / alpha.sqrt()
    if prediction_type == "v_prediction":
        return alpha.sqrt() * noisy - (1 - alpha).sqrt() * output
    raise ValueError(f"image prediction type must be one of {IMAGE_PREDICTION_TYPES}, got {prediction_type!r}")


def image_x0_at_step(
    output: torch.Tensor,
    model_input: torch.Tensor,
    alpha: float,
    prediction_type: str,
    clip: bool,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """`image_x0_from_output` for one sampling step, with alpha a float: x0 = s_in x_t + s_out output
    in two kernels (into `out` where given), clamped to [-1, 1] in place when `clip`. For
    `sample` the output itself is x0 (and is clamped in place)."""
    if prediction_type == "sample":
        image = output
    else:
        if prediction_type == "epsilon":  # x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)
            scale_in, scale_out = 1.0 / math.sqrt(alpha), -math.sqrt(1.0 - alpha) / math.sqrt(alpha)
        elif prediction_type == "v_prediction":  # x0 = sqrt(a) x_t - sqrt(1 - a) v
            scale_in, scale_out = math.sqrt(alpha), -math.sqrt(1.0 - alpha)
        else:
            raise ValueError(f"image prediction type must be one of {IMAGE_PREDICTION_TYPES}, got {prediction_type!r}")
        image = torch.mul(model_input, scale_in, out=out) if out is not None else model_input * scale_in
        image.add_(output, alpha=scale_out)
    return image.clamp_(-1, 1) if clip else image


def clean_to_scheduler_output(
    clean: torch.Tensor, model_input: torch.Tensor, alpha_prod_t: float, prediction_type: str
) -> torch.Tensor:
    """The joint clean estimate x0 -> what a scheduler with `prediction_type` steps on.

    The inverse of `image_x0_from_output` on the variance-preserving model input
    x_t = sqrt(a) x0 + sqrt(1 - a) eps: `sample` is x0 itself, `epsilon` is
    (x_t - sqrt(a) x0) / sqrt(1 - a), `v_prediction` is sqrt(a) eps - sqrt(1 - a) x0.
    """
    if prediction_type in ("sample", "original_sample"):
        return clean
    a = float(alpha_prod_t)
    if prediction_type == "epsilon":
        return (model_input - math.sqrt(a) * clean) / math.sqrt(max(1.0 - a, 1e-20))
    if prediction_type == "v_prediction":
        eps = (model_input - math.sqrt(a) * clean) / math.sqrt(max(1.0 - a, 1e-20))
        return math.sqrt(a) * eps - math.sqrt(1.0 - a) * clean
    raise ValueError(
        f"DAKTerPipeline cannot drive a scheduler with prediction_type={prediction_type!r}; use sample, epsilon or "
        "v_prediction"
    )


def as_sampling_scheduler(scheduler):
    """The scheduler a DAKTer pipeline steps: its own class, fed x0 ('sample'), no clipping.

    The pipeline turns every network output into a clean estimate of image and labels,
    so the scheduler runs with `prediction_type="sample"`; sample clipping and dynamic
    thresholding would clip the b-scaled label channels and are turned off. diffusers'
    training scheduler (DDPM, ancestral) becomes DDIM, the default sampler.
    """
    config = scheduler.config
    wanted = {"prediction_type": "sample", "clip_sample": False, "thresholding": False}
    changes = {key: value for key, value in wanted.items() if key in config and config[key] != value}
    cls = DDIMScheduler if isinstance(scheduler, DDPMScheduler) else type(scheduler)
    if not changes and cls is type(scheduler):
        return scheduler
    return cls.from_config(config, **changes)


def _is_plain_ddim(scheduler, eta: float) -> bool:
    """DDIM with eta = 0 stepping on x0: the pipeline does that step itself, in place."""
    config = scheduler.config
    return (
        type(scheduler) is DDIMScheduler
        and eta == 0
        and config.prediction_type == "sample"
        and not config.clip_sample
        and not config.thresholding
    )


def _model_alphas(scheduler, timesteps: torch.Tensor) -> List[float]:
    """alpha_bar of the (variance-preserving) network input at each step, as floats.

    Schedulers with a sigma table (DPM-Solver, UniPC, Euler, ...) step on their own
    sigmas, which need not be alphas_cumprod[t] (Karras sigmas, zero-SNR clamping), so
    alpha = 1 / (1 + sigma^2) from that table; DDIM and DDPM index alphas_cumprod.
    """
    sigmas = getattr(scheduler, "sigmas", None)
    if isinstance(sigmas, torch.Tensor) and sigmas.numel() == len(timesteps) + 1:
        return [1.0 / (1.0 + float(s) ** 2) for s in sigmas[:-1].double().cpu()]
    alphas = scheduler.alphas_cumprod.double().cpu()
    return [float(alphas[int(t)]) for t in timesteps]


# ---------------------------------------------------------------------------- pipeline
@dataclass
class DAKTerPipelineOutput(BaseOutput):
    """
    Args:
        images: generated SAR images; PIL (mode L) list, numpy (B, H, W, 1) in [0, 1], or a tensor (B, 1, H, W).
        soft_labels: the final label logits (B, C, H, W), float (numpy, or a tensor for `output_type="pt"`);
            None for models trained with `l2` labels, which have no logits.
        masks: hard masks (class ids): PIL (mode L) list, numpy (B, H, W) int64, or a tensor.
    """

    images: Union[List[PIL.Image.Image], np.ndarray, torch.Tensor]
    soft_labels: Optional[Union[np.ndarray, torch.Tensor]]
    masks: Union[List[PIL.Image.Image], np.ndarray, torch.Tensor]


class DAKTerPipeline(DiffusionPipeline):
    r"""
    Joint generation of a SAR image and its soft label with a UNet that predicts the
    clean image (or epsilon / v for it) and clean label logits (DAKTer, Algorithm 2).

    Parameters:
        unet ([`UNet2DModel`]): in = out = 1 + K channels (K = C for one-hot labels).
        scheduler ([`SchedulerMixin`]): DDIM by default; any diffusers scheduler (DPM-Solver++,
            UniPC, Euler, ...) works. It runs with `prediction_type="sample"`: the pipeline turns
            every network output into a clean estimate before each step (and into epsilon / v
            for a scheduler set to step on those).
        balancing_factor (`float`): b, the SNR balancing factor the model was trained with.
        class_names (`List[str]`): C class names; class i is label channel i.
        label_loss (`str`): `ce` (soft labels from logits) or `l2` (regressed codes, baselines).
        label_encoding (`str`): `onehot` or `binary` (SatSynth bit channels, with `l2`).
        image_prediction_type (`str`): what the image channel predicts: `sample`, `epsilon`, `v_prediction`.
        balance_resolution (`int`, *optional*): resolution b was computed at (None = native).
    """

    model_cpu_offload_seq = "unet"

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: SchedulerMixin,
        balancing_factor: float = 1.0,
        class_names: Optional[Sequence[str]] = None,
        label_loss: str = "ce",
        label_encoding: str = "onehot",
        image_prediction_type: str = "sample",
        balance_resolution: Optional[int] = None,
        input_normalization: Optional[dict] = None,
    ):
        super().__init__()
        if class_names is None:
            class_names = ["background", "oil"]
        class_names = list(class_names)
        check_pipeline_config(unet, class_names, label_loss, label_encoding, image_prediction_type, balancing_factor)
        scheduler = as_sampling_scheduler(scheduler)
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(
            balancing_factor=float(balancing_factor),
            class_names=class_names,
            label_loss=label_loss,
            label_encoding=label_encoding,
            image_prediction_type=image_prediction_type,
            balance_resolution=balance_resolution,
            input_normalization=input_normalization,  # how training pixels became 0..255 (dakter_hf.data.raster)
        )

    # ---------------------------------------------------------------- save / load
    def save_pretrained(self, save_directory: Union[str, os.PathLike], **kwargs):
        """Save components and config, plus this file, so the folder loads without dakter_hf."""
        super().save_pretrained(save_directory, **kwargs)
        source = sys.modules[type(self).__module__].__file__
        target = os.path.join(save_directory, f"{PIPELINE_FILE_STEM}.py")
        if os.path.abspath(source) != os.path.abspath(target):
            shutil.copyfile(source, target + ".tmp")
            os.replace(target + ".tmp", target)
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path, encoding="utf-8") as handle:
            index = json.load(handle)
        index["_class_name"] = [PIPELINE_FILE_STEM, type(self).__name__]
        with open(index_path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(index, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(index_path + ".tmp", index_path)

    @classmethod
    def load_config(cls, *args, **kwargs):
        # Loading through this class itself: use this class, not the file copy the
        # `["pipeline_dakter", "DAKTerPipeline"]` class name would point diffusers to.
        result = super().load_config(*args, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        if isinstance(config.get("_class_name"), (list, tuple)):
            config["_class_name"] = config["_class_name"][1]
        return result

    # ------------------------------------------------------------------- sampling
    @property
    def num_classes(self) -> int:
        return len(self.config.class_names)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 200,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        eta: float = 0.0,
        label_noise: str = "consistent",
        clip_image: bool = True,
        output_type: str = "pil",
        return_dict: bool = True,
        soft_label_source: str = "final",
        trajectory_steps: int = 5,
        posterior_timestep: Optional[int] = None,
    ) -> Union[DAKTerPipelineOutput, tuple]:
        r"""
        Generate SAR images with soft labels (Algorithm 2).

        Args:
            batch_size (`int`, defaults to 1): number of image/label pairs.
            num_inference_steps (`int`, defaults to 200): scheduler steps (the paper: 200 DDIM steps).
            generator (`torch.Generator` or a list of them, *optional*): one generator per sample
                makes each sample reproducible on its own, whatever the batch.
            eta (`float`, defaults to 0.0): DDIM eta; 0 is the paper's deterministic step (passed to
                schedulers whose `step` takes it).
            label_noise (`str`, defaults to `"consistent"`): `consistent` keeps the label state
                in the b-scaled space with unit-variance noise, as in training. `literal` reads
                Algorithm 2 as printed: the network sees `b * y'_t` with `y'_T ~ N(0, I)`, so the
                label noise enters scaled by b and, the DDIM step being deterministic, stays so.
                (Multiplying the DDIM output by b again at every step would compound to b^steps
                and overflow for b > ~1.5, so the scaling is applied once, to the start noise.)
            clip_image (`bool`, defaults to True): clamp the image's x0 estimate to [-1, 1].
            output_type (`str`, defaults to `"pil"`): `pil`, `np` or `pt`.
            return_dict (`bool`, defaults to True): return a [`DAKTerPipelineOutput`] or a tuple.
            soft_label_source (`str`, defaults to `"final"`): where the soft label comes from.
                `final`: the last step's label logits (Algorithm 2). `trajectory`: the mean of the label
                probabilities over the last `trajectory_steps` steps, returned as log-probabilities (logits
                whose softmax is that mean). `posterior`: the joint model as a segmenter of its own finished
                image: the final label state is noised again to `posterior_timestep` while the image stays
                clean, and the label head is read once (see `segment`). The mask is the soft label's argmax.
            trajectory_steps (`int`, defaults to 5): K for `trajectory`.
            posterior_timestep (`int`, *optional*): the label noise level for `posterior`; by default the last
                training timestep, where the labels are noise alone and the label comes from the image.
        """
        check_soft_label_options(soft_label_source, trajectory_steps, posterior_timestep)
        if soft_label_source != "final" and self.config.label_loss != "ce":
            raise ValueError(
                f"soft_label_source={soft_label_source!r} needs a model trained with label_loss='ce' (label logits); "
                f"this one has label_loss={self.config.label_loss!r}"
            )
        if label_noise not in LABEL_NOISE_READINGS:
            raise ValueError(f"label_noise must be one of {LABEL_NOISE_READINGS}, got {label_noise!r}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for batch_size={batch_size}; pass one per sample")
        config = self.config
        b = float(config.balancing_factor)
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        channels = self.unet.config.in_channels
        device, dtype = self._execution_device, self.unet.dtype

        scheduler = self.scheduler
        scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = scheduler.timesteps
        state = randn_tensor((batch_size, channels, height, width), generator=generator, device=device, dtype=dtype)
        if scheduler.init_noise_sigma != 1.0:  # sigma-space schedulers (Euler, ...) start from their first sigma
            state = state * scheduler.init_noise_sigma
        if label_noise == "literal":
            state = torch.cat([state[:, :1], state[:, 1:] * b], dim=1)
        alphas = _model_alphas(scheduler, timesteps)

        keep = min(trajectory_steps, len(timesteps)) if soft_label_source == "trajectory" else 0
        if _is_plain_ddim(scheduler, eta):
            state, label_output, trajectory = self._ddim_loop(state, timesteps, alphas, b, clip_image, keep)
        else:
            state, label_output, trajectory = self._scheduler_loop(
                state, timesteps, alphas, b, clip_image, eta, generator, keep
            )

        if soft_label_source == "trajectory":  # log of the mean probability: logits whose softmax is the mean
            label_output = (trajectory / keep).clamp_min(torch.finfo(trajectory.dtype).tiny).log()
        elif soft_label_source == "posterior":
            label_output = self.segment(
                state[:, :1].clamp(-1, 1), posterior_timestep, label_state=state[:, 1:], generator=generator
            )
        images = (state[:, :1].float() / 2 + 0.5).clamp(0, 1)
        label_output = label_output.float()
        if config.label_loss == "ce":
            soft_labels = label_output
            masks = label_output.argmax(dim=1)
        else:
            soft_labels = None
            masks = decode_labels(label_output, self.num_classes, config.label_encoding)

        if output_type == "pt":
            result = (images, soft_labels, masks)
        else:
            images_np = images.cpu().permute(0, 2, 3, 1).numpy()
            masks_np = masks.cpu().numpy().astype(np.int64)
            soft_np = None if soft_labels is None else soft_labels.cpu().numpy()
            if output_type == "pil":
                pil_images = [
                    PIL.Image.fromarray((image[..., 0] * 255).round().astype(np.uint8), mode="L")
                    for image in images_np
                ]
                pil_masks = [PIL.Image.fromarray(mask.astype(np.uint8), mode="L") for mask in masks_np]
                result = (pil_images, soft_np, pil_masks)
            else:
                result = (images_np, soft_np, masks_np)

        self.maybe_free_model_hooks()
        if not return_dict:
            return result
        return DAKTerPipelineOutput(*result)

    def _ddim_loop(
        self,
        state: torch.Tensor,
        timesteps: torch.Tensor,
        alphas: List[float],
        b: float,
        clip_image: bool,
        keep: int = 0,
    ) -> tuple:
        """Deterministic DDIM (eta = 0) on x0, updated in place: a few fused kernels per step.

        DDIMScheduler.step with prediction_type="sample" computes
        eps = (x_t - sqrt(a) x0) / sqrt(1 - a) and x_prev = sqrt(a') x0 + sqrt(1 - a') eps,
        i.e. x_prev = c_t x_t + c_0 x0 with c_t = sqrt(1 - a') / sqrt(1 - a) and
        c_0 = sqrt(a') - c_t sqrt(a): the same step, with scalars computed once per step
        and no tensor allocated beyond the network's output. Returns the final state and
        the last label output, and the sum of the label probabilities of the last `keep` steps
        (None when `keep` is 0).
        """
        scheduler, config = self.scheduler, self.config
        schedule = scheduler.alphas_cumprod.double().cpu()
        stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        image_x0 = torch.empty_like(state[:, :1]) if config.image_prediction_type != "sample" else None
        labels = torch.empty_like(state[:, 1:]) if config.label_loss == "ce" else None
        softmax_out = torch.ops.aten._softmax.out
        coefficients = []  # (c_t, c_0) of every step, as floats: nothing is read back from the device in the loop
        for a, t in zip(alphas, timesteps.tolist()):
            previous = int(t) - stride
            a_prev = float(schedule[previous]) if previous >= 0 else float(scheduler.final_alpha_cumprod)
            c_t = math.sqrt(max(1.0 - a_prev, 0.0)) / math.sqrt(max(1.0 - a, 1e-20))
            coefficients.append((c_t, math.sqrt(a_prev) - c_t * math.sqrt(a)))
        label_output, trajectory = None, None
        for i, t in enumerate(self.progress_bar(timesteps)):
            output = joint_forward(self.unet, state, t)
            label_output = output[:, 1:]
            if i >= len(timesteps) - keep:
                trajectory = _add_probabilities(trajectory, label_output)
            a = alphas[i]
            c_t, c_0 = coefficients[i]
            image = image_x0_at_step(
                output[:, :1], state[:, :1], a, config.image_prediction_type, clip_image, out=image_x0
            )
            state.mul_(c_t)
            state[:, :1].add_(image, alpha=c_0)
            if labels is not None:  # b (softmax * 2 - 1) in two kernels: softmax, then the step's axpy
                softmax_out(label_output, 1, False, out=labels)
                state[:, 1:].add_(labels, alpha=2 * b * c_0).sub_(b * c_0)
            else:  # l2: the regressed codes, clamped, times b
                state[:, 1:].add_(label_output.clamp(-1, 1), alpha=b * c_0)
        return state, label_output, trajectory

    def _scheduler_loop(
        self, state, timesteps, alphas, b: float, clip_image: bool, eta: float, generator, keep: int = 0
    ):
        """Any diffusers scheduler: the clean estimate, converted to its prediction type, goes to `step`."""
        scheduler, config = self.scheduler, self.config
        accepted = set(inspect.signature(scheduler.step).parameters)
        extra = {key: value for key, value in (("eta", eta), ("generator", generator)) if key in accepted}
        prediction_type = scheduler.config.prediction_type
        label_output, trajectory = None, None
        for i, t in enumerate(self.progress_bar(timesteps)):
            model_input = scheduler.scale_model_input(state, t)
            output = joint_forward(self.unet, model_input, t)
            label_output = output[:, 1:]
            if i >= len(timesteps) - keep:
                trajectory = _add_probabilities(trajectory, label_output)
            image = image_x0_at_step(
                output[:, :1], model_input[:, :1], alphas[i], config.image_prediction_type, clip_image
            )
            clean = torch.cat([image, label_prediction_to_state(label_output, config.label_loss, b)], dim=1)
            target = clean_to_scheduler_output(clean, model_input, alphas[i], prediction_type)
            state = scheduler.step(target, t, state, **extra).prev_sample
        return state, label_output, trajectory

    # ------------------------------------------------------------------ segmenting
    @torch.no_grad()
    def segment(
        self,
        images: torch.Tensor,
        label_timestep: Optional[int] = None,
        label_state: Optional[torch.Tensor] = None,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
    ) -> torch.Tensor:
        r"""
        The joint model as a segmenter: label logits for clean images, read from the label head.

        The image channel holds the clean image (image timestep 0); the label channels hold
        `label_state` noised to `label_timestep`, x = sqrt(a) y + sqrt(1 - a) eps, as in training.
        Without a `label_state` the labels start from the uniform distribution's state, so at the
        last training timestep (the default) they are noise alone: a segmentation of `images`
        from nothing but the image. A UNet trained with an independent label timestep
        (`has_label_timestep`) was trained for exactly this input; the paper's UNet, which
        always saw one noise level for both, gets `label_timestep` as its one timestep.

        Args:
            images (`torch.Tensor`): (B, 1, H, W) in [-1, 1] at the UNet's sample size.
            label_timestep (`int`, *optional*): the labels' noise level (default: the last training timestep).
            label_state (`torch.Tensor`, *optional*): (B, C, H, W) labels in the b-scaled state space.
            generator (`torch.Generator` or a list of them, *optional*): for the label noise.

        Returns:
            `torch.Tensor`: label logits (B, C, H, W), float32.
        """
        if self.config.label_loss != "ce":
            raise ValueError("segment() needs a model trained with label_loss='ce' (label logits)")
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be (B, 1, H, W) in [-1, 1], got shape {tuple(images.shape)}")
        last = self.scheduler.config.num_train_timesteps - 1
        label_timestep = last if label_timestep is None else int(label_timestep)
        if not 0 <= label_timestep <= last:
            raise ValueError(f"label_timestep must be in [0, {last}], got {label_timestep}")
        device, dtype = self._execution_device, self.unet.dtype
        images = images.to(device=device, dtype=dtype)
        shape = (images.shape[0], self.unet.config.in_channels - 1, *images.shape[2:])
        b = float(self.config.balancing_factor)
        if label_state is None:  # the uniform distribution: (2 / C - 1) b in every channel
            label_state = torch.full(shape, (2.0 / self.num_classes - 1.0) * b, device=device, dtype=dtype)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        alpha = float(self.scheduler.alphas_cumprod[label_timestep])
        labels = math.sqrt(alpha) * label_state.to(device=device, dtype=dtype) + math.sqrt(1.0 - alpha) * noise
        sample = torch.cat([images, labels], dim=1)
        output = joint_forward(self.unet, sample, 0, label_timestep=label_timestep)
        return output[:, 1:].float()


def _add_probabilities(total: Optional[torch.Tensor], label_output: torch.Tensor) -> torch.Tensor:
    """The running sum of label probabilities (softmax over classes) of the trajectory's last steps."""
    probabilities = label_output.float().softmax(dim=1)
    return probabilities if total is None else total.add_(probabilities)


def check_label_options(label_loss: str, label_encoding: str, balancing_factor: float) -> None:
    """The label options training and sampling share: clear errors for impossible ones."""
    if label_loss not in LABEL_LOSSES:
        raise ValueError(f"label_loss must be one of {LABEL_LOSSES}, got {label_loss!r}")
    if label_encoding not in LABEL_ENCODINGS:
        raise ValueError(f"label_encoding must be one of {LABEL_ENCODINGS}, got {label_encoding!r}")
    if label_encoding == "binary" and label_loss == "ce":
        raise ValueError("label_encoding='binary' needs label_loss='l2': bit channels are not class logits")
    if not (isinstance(balancing_factor, (int, float)) and balancing_factor > 0 and math.isfinite(balancing_factor)):
        raise ValueError(f"balancing_factor must be a positive finite number, got {balancing_factor!r}")


def check_pipeline_config(
    unet, class_names, label_loss, label_encoding, image_prediction_type, balancing_factor
) -> None:
    """Clear errors for configs that cannot describe a working DAKTer model."""
    check_label_options(label_loss, label_encoding, balancing_factor)
    if image_prediction_type not in IMAGE_PREDICTION_TYPES:
        raise ValueError(
            f"image_prediction_type must be one of {IMAGE_PREDICTION_TYPES}, got {image_prediction_type!r}"
        )
    expected = 1 + num_label_channels(len(class_names), label_encoding)
    in_channels, out_channels = unet.config.in_channels, unet.config.out_channels
    if in_channels != expected or out_channels != expected:
        raise ValueError(
            f"the UNet has in_channels={in_channels}, out_channels={out_channels}, but {len(class_names)} classes "
            f"({class_names}) with {label_encoding} labels need 1 image + "
            f"{expected - 1} label channels = {expected} in and out"
        )
