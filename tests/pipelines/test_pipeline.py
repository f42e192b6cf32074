"""Tests of DAKTerPipeline (Algorithm 2): sampler math, reproducibility, outputs, save/load.

Tiny: the `tiny` UNet preset at 16 px, a few samples, 5 DDIM steps.
"""

import ast
import json
import os
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput

from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.joint.unet import UNET_PRESETS, make_joint_unet
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline, DAKTerPipelineOutput


SIZE = 16
STEPS = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_unet(num_classes=2, seed=0, **kwargs):
    torch.manual_seed(seed)
    return make_joint_unet(num_classes, "tiny", sample_size=SIZE, **kwargs).eval()


def make_pipe(num_classes=2, b=0.7, scheduler=None, unet=None, **kwargs):
    names = [f"class{i}" for i in range(num_classes)]
    encoding = kwargs.get("label_encoding", "onehot")
    unet = unet if unet is not None else tiny_unet(num_classes, label_encoding=encoding)
    scheduler = scheduler if scheduler is not None else DAKTerObjective(2).sampling_scheduler()
    return quiet(DAKTerPipeline(unet=unet, scheduler=scheduler, balancing_factor=b, class_names=names, **kwargs))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------- stand-in network
class StandInUNet(UNet2DModel):
    """A real (tiny) UNet2DModel config, but `forward` returns a fixed clean image and a
    fixed logit map, or, in `oracle` mode, the epsilon / v output whose x0 is the fixed
    image. It records every input it is given."""

    fixed_image = None
    fixed_logits = None
    oracle = None  # None: output the fixed image itself; else "epsilon" / "v_prediction"
    alphas_cumprod = None

    def forward(self, sample, timestep, *args, **kwargs):
        self.inputs.append(sample.detach().clone())
        batch = sample.shape[0]
        image = self.fixed_image.expand(batch, -1, -1, -1)
        if self.oracle is not None:
            a = self.alphas_cumprod[int(timestep)]
            x_t = sample[:, :1]
            if self.oracle == "epsilon":
                image = (x_t - a.sqrt() * image) / (1 - a).sqrt()
            else:  # v = sqrt(a) eps - sqrt(1-a) x0 with eps = (x_t - sqrt(a) x0) / sqrt(1-a)
                image = (a.sqrt() * x_t - image) / (1 - a).sqrt()
        return UNet2DOutput(sample=torch.cat([image, self.fixed_logits.expand(batch, -1, -1, -1)], dim=1))


def stand_in(num_classes, seed=0, oracle=None):
    config = dict(UNET_PRESETS["tiny"], sample_size=SIZE, in_channels=1 + num_classes, out_channels=1 + num_classes)
    unet = StandInUNet(**config).eval()
    g = gen(100 + seed)
    unet.fixed_image = torch.rand(1, 1, SIZE, SIZE, generator=g) * 1.8 - 0.9
    unet.fixed_logits = torch.randn(1, num_classes, SIZE, SIZE, generator=g) * 3
    unet.oracle = oracle
    unet.inputs = []
    return unet


def expected_inputs(noise, fixed_image, fixed_logits, b, scheduler, label_noise):
    """Algorithm 2 written out: DDIM (eta = 0) on (x, y') with the clean estimate
    (x0, (softmax(logits) * 2 - 1) * b). Returns the network inputs and the final state."""
    batch = noise.shape[0]
    clean = torch.cat(
        [fixed_image.expand(batch, -1, -1, -1), ((fixed_logits.softmax(dim=1) * 2 - 1) * b).expand(batch, -1, -1, -1)],
        dim=1,
    ).double()
    timesteps = [int(t) for t in scheduler.timesteps]
    alphas = scheduler.alphas_cumprod.double()
    state = noise.double()
    if label_noise == "literal":  # the network sees b * y'_T: the start noise of the labels is scaled by b once
        state = torch.cat([state[:, :1], state[:, 1:] * b], dim=1)
    inputs = []
    for i, t in enumerate(timesteps):
        a = alphas[t]
        a_prev = alphas[timesteps[i + 1]] if i + 1 < len(timesteps) else scheduler.final_alpha_cumprod.double()
        model_input = state
        inputs.append(model_input)
        eps = (model_input - a.sqrt() * clean) / (1 - a).sqrt()
        state = a_prev.sqrt() * clean + (1 - a_prev).sqrt() * eps
    return inputs, state


# --------------------------------------------------------------------- sampler math
@pytest.mark.parametrize("label_noise", ["consistent", "literal"])
@pytest.mark.parametrize("b", [0.4, 1.0, 2.0])
@pytest.mark.parametrize("num_classes", [2, 5])
def test_sampler_math_with_fixed_network(num_classes, b, label_noise):
    unet = stand_in(num_classes)
    pipe = make_pipe(num_classes, b=b, unet=unet)
    assert pipe.scheduler.config.prediction_type == "sample"
    out = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(7), label_noise=label_noise, output_type="pt")
    assert isinstance(out, DAKTerPipelineOutput)

    # final image = the network's clean image, in [0, 1]
    expected_image = (unet.fixed_image / 2 + 0.5).expand(2, -1, -1, -1)
    assert torch.allclose(out.images, expected_image, atol=1e-4)
    # soft labels are exactly the last logits; masks their argmax
    assert torch.equal(out.soft_labels, unet.fixed_logits.expand(2, -1, -1, -1))
    assert torch.equal(out.masks, unet.fixed_logits.argmax(dim=1).expand(2, -1, -1))

    # every intermediate network input follows Algorithm 2
    noise = torch.randn(2, 1 + num_classes, SIZE, SIZE, generator=gen(7))
    inputs, final = expected_inputs(noise, unet.fixed_image, unet.fixed_logits, b, pipe.scheduler, label_noise)
    assert len(unet.inputs) == STEPS
    for seen, want in zip(unet.inputs, inputs):
        assert torch.allclose(seen.double(), want, rtol=1e-4, atol=1e-5)
    assert torch.allclose(out.images.double(), (final[:, :1] / 2 + 0.5).clamp(0, 1), atol=1e-5)


def test_literal_label_noise_differs_only_in_label_inputs():
    b = 2.0
    recorded = {}
    for mode in ("consistent", "literal"):
        unet = stand_in(2)
        pipe = make_pipe(2, b=b, unet=unet)
        recorded[mode] = (
            pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(3), label_noise=mode, output_type="np"),
            unet.inputs,
        )
    (out_c, in_c), (out_l, in_l) = recorded["consistent"], recorded["literal"]
    np.testing.assert_allclose(out_c.images, out_l.images, atol=1e-6)
    np.testing.assert_array_equal(out_c.soft_labels, out_l.soft_labels)
    # first input: same noise, label part scaled by b in the literal reading
    assert torch.equal(in_c[0][:, :1], in_l[0][:, :1])
    assert torch.allclose(in_l[0][:, 1:], b * in_c[0][:, 1:])
    # the image channel never depends on the label reading; the label channels do
    for a, c in zip(in_c, in_l):
        assert torch.allclose(a[:, :1], c[:, :1], atol=1e-6)
        assert not torch.allclose(a[:, 1:], c[:, 1:])


@pytest.mark.parametrize("prediction", ["sample", "epsilon", "v_prediction"])
def test_image_prediction_types_convert_to_x0(prediction):
    unet = stand_in(2, oracle=None if prediction == "sample" else prediction)
    pipe = make_pipe(2, b=0.5, unet=unet, image_prediction_type=prediction)
    unet.alphas_cumprod = pipe.scheduler.alphas_cumprod
    out = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(1), output_type="pt")
    assert torch.allclose(out.images, (unet.fixed_image / 2 + 0.5).expand(2, -1, -1, -1), atol=1e-4)


def test_clip_image():
    unet = stand_in(2)
    unet.fixed_image = torch.full((1, 1, SIZE, SIZE), 1.5)
    unet.fixed_image[..., : SIZE // 2, :] = -0.5
    clipped = make_pipe(2, unet=unet)(num_inference_steps=STEPS, generator=gen(0), output_type="pt").images
    assert torch.allclose(clipped[..., SIZE // 2 :, :], torch.ones(1)) and torch.allclose(
        clipped[..., : SIZE // 2, :], torch.tensor(0.25)
    )
    raw = make_pipe(2, unet=unet)(
        num_inference_steps=STEPS, generator=gen(0), output_type="pt", clip_image=False
    ).images
    assert torch.allclose(raw, clipped)  # the output is always clamped to [0, 1]


# --------------------------------------------------------------------- reproducibility
def test_same_seed_same_output():
    pipe = make_pipe(2)
    a = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(11), output_type="np")
    b = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(11), output_type="np")
    c = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(12), output_type="np")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.soft_labels, b.soft_labels)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.allclose(a.images, c.images)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_batch_of_generators_equals_single_runs(eta):
    pipe = make_pipe(2)
    seeds = [3, 1, 4, 15]
    batch = pipe(batch_size=4, num_inference_steps=STEPS, generator=[gen(s) for s in seeds], eta=eta, output_type="pt")
    for i, seed in enumerate(seeds):
        single = pipe(batch_size=1, num_inference_steps=STEPS, generator=gen(seed), eta=eta, output_type="pt")
        assert torch.allclose(batch.images[i : i + 1], single.images, atol=1e-5)
        assert torch.allclose(batch.soft_labels[i : i + 1], single.soft_labels, atol=1e-5)
    assert not torch.allclose(batch.images[0], batch.images[1])


def test_output_types():
    C = 3
    pipe = make_pipe(C)
    outs = {
        kind: pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(5), output_type=kind)
        for kind in ("pil", "np", "pt")
    }

    np_out = outs["np"]
    assert isinstance(np_out.images, np.ndarray) and np_out.images.shape == (2, SIZE, SIZE, 1)
    assert np_out.images.dtype == np.float32
    assert np_out.images.min() >= 0 and np_out.images.max() <= 1
    assert isinstance(np_out.soft_labels, np.ndarray) and np_out.soft_labels.shape == (2, C, SIZE, SIZE)
    assert np.issubdtype(np_out.soft_labels.dtype, np.floating)
    assert isinstance(np_out.masks, np.ndarray) and np_out.masks.shape == (2, SIZE, SIZE)
    assert np.issubdtype(np_out.masks.dtype, np.integer)
    np.testing.assert_array_equal(np_out.masks, np_out.soft_labels.argmax(axis=1))

    pt_out = outs["pt"]
    assert pt_out.images.shape == (2, 1, SIZE, SIZE) and pt_out.images.dtype == torch.float32
    assert pt_out.soft_labels.shape == (2, C, SIZE, SIZE)
    assert pt_out.masks.shape == (2, SIZE, SIZE) and pt_out.masks.dtype == torch.int64
    np.testing.assert_allclose(pt_out.images.permute(0, 2, 3, 1).numpy(), np_out.images, atol=1e-6)
    np.testing.assert_array_equal(pt_out.masks.numpy(), np_out.masks)

    pil_out = outs["pil"]
    assert isinstance(pil_out.images, list) and len(pil_out.images) == 2
    assert isinstance(pil_out.masks, list) and len(pil_out.masks) == 2
    for i, (image, mask) in enumerate(zip(pil_out.images, pil_out.masks)):
        assert isinstance(image, PIL.Image.Image) and image.mode == "L" and image.size == (SIZE, SIZE)
        assert isinstance(mask, PIL.Image.Image) and mask.mode == "L" and mask.size == (SIZE, SIZE)
        np.testing.assert_array_equal(np.asarray(mask), np_out.masks[i])
        assert np.abs(np.asarray(image).astype(float) - np_out.images[i, ..., 0] * 255).max() <= 0.5 + 1e-3
    assert isinstance(pil_out.soft_labels, np.ndarray) and pil_out.soft_labels.shape == (2, C, SIZE, SIZE)

    as_tuple = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(5), output_type="np", return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 3
    np.testing.assert_array_equal(as_tuple[0], np_out.images)


@pytest.mark.parametrize("num_classes,encoding", [(2, "onehot"), (5, "onehot"), (5, "binary"), (3, "binary")])
def test_l2_models_have_no_soft_labels(num_classes, encoding):
    pipe = make_pipe(num_classes, label_loss="l2", label_encoding=encoding)
    for kind in ("np", "pt"):
        out = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(0), output_type=kind)
        assert out.soft_labels is None
        masks = np.asarray(out.masks)
        assert masks.shape == (2, SIZE, SIZE)
        assert masks.min() >= 0 and masks.max() < num_classes
    pil = pipe(batch_size=1, num_inference_steps=STEPS, generator=gen(0), output_type="pil")
    assert pil.soft_labels is None and np.asarray(pil.masks[0]).max() < num_classes


def test_l2_binary_masks_decode_the_last_output():
    C = 5
    unet = stand_in(3)  # 3 bit channels for 5 classes
    codes = torch.tensor([[-1, -1, -1], [-1, -1, 1], [-1, 1, -1], [-1, 1, 1], [1, -1, -1]], dtype=torch.float32)
    ids = torch.arange(SIZE * SIZE).view(SIZE, SIZE) % C
    unet.fixed_logits = codes[ids].permute(2, 0, 1)[None] * 0.7
    pipe = make_pipe(C, unet=unet, label_loss="l2", label_encoding="binary")
    out = pipe(batch_size=1, num_inference_steps=STEPS, generator=gen(0), output_type="pt")
    assert torch.equal(out.masks[0], ids)


# --------------------------------------------------------------------- save / load
TOP_LEVEL_ALLOWED = {"torch", "diffusers", "numpy", "PIL"}


@pytest.mark.parametrize(
    "options",
    [
        {
            "num_classes": 3,
            "b": 0.37,
            "label_loss": "ce",
            "label_encoding": "onehot",
            "image_prediction_type": "v_prediction",
            "balance_resolution": 64,
        },
        {
            "num_classes": 5,
            "b": 2.0,
            "label_loss": "l2",
            "label_encoding": "binary",
            "image_prediction_type": "epsilon",
            "balance_resolution": None,
        },
    ],
)
def test_save_and_load_three_ways(tmp_path, options):
    options = dict(options)
    num_classes, b = options.pop("num_classes"), options.pop("b")
    pipe = make_pipe(num_classes, b=b, **options)
    path = str(tmp_path / "pipe")
    pipe.save_pretrained(path)

    assert os.path.isfile(os.path.join(path, "pipeline_dakter.py"))
    with open(os.path.join(path, "model_index.json"), encoding="utf-8") as handle:
        index = json.load(handle)
    assert index["_class_name"] == ["pipeline_dakter", "DAKTerPipeline"]

    with open(os.path.join(path, "pipeline_dakter.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the copied pipeline file"
            names.add(node.module.split(".")[0])
    foreign = {n for n in names if n not in TOP_LEVEL_ALLOWED and n not in sys.stdlib_module_names}
    assert not foreign, f"pipeline_dakter.py imports {foreign}"
    assert "dakter_hf" not in names

    def sample(p):
        return quiet(p)(batch_size=2, num_inference_steps=STEPS, generator=gen(9), output_type="np")

    reference = sample(pipe)
    loaded = [
        DAKTerPipeline.from_pretrained(path),
        DiffusionPipeline.from_pretrained(path, trust_remote_code=True),
        DiffusionPipeline.from_pretrained(
            path, custom_pipeline=os.path.join(path, "pipeline_dakter.py"), trust_remote_code=True
        ),
    ]
    assert type(loaded[0]) is DAKTerPipeline
    for other in loaded:
        assert type(other).__name__ == "DAKTerPipeline"
        assert other.config.balancing_factor == b
        assert list(other.config.class_names) == list(pipe.config.class_names)
        for key in ("label_loss", "label_encoding", "image_prediction_type", "balance_resolution"):
            assert other.config[key] == pipe.config[key], key
        assert other.scheduler.config.prediction_type == "sample"
        got = sample(other)
        np.testing.assert_array_equal(got.images, reference.images)
        np.testing.assert_array_equal(got.masks, reference.masks)
        if reference.soft_labels is None:
            assert got.soft_labels is None
        else:
            np.testing.assert_array_equal(got.soft_labels, reference.soft_labels)

    # a pipeline loaded from the copied file saves again, and that loads too
    again = str(tmp_path / "again")
    loaded[1].save_pretrained(again)
    with open(os.path.join(again, "model_index.json"), encoding="utf-8") as handle:
        assert json.load(handle)["_class_name"] == ["pipeline_dakter", "DAKTerPipeline"]
    np.testing.assert_array_equal(sample(DAKTerPipeline.from_pretrained(again)).images, reference.images)


# --------------------------------------------------------------------- bad configs
def test_class_count_must_match_unet_channels():
    unet = tiny_unet(2)
    scheduler = DAKTerObjective(2).sampling_scheduler()
    with pytest.raises(ValueError, match="channels"):
        DAKTerPipeline(unet, scheduler, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="channels"):  # 2 classes in binary need 1 bit channel, not 2
        DAKTerPipeline(unet, scheduler, class_names=["a", "b"], label_loss="l2", label_encoding="binary")
    DAKTerPipeline(unet, scheduler)  # default class names: background, oil


@pytest.mark.parametrize(
    "kwargs",
    [
        {"label_loss": "bce"},
        {"label_encoding": "gray"},
        {"image_prediction_type": "v"},
        {"image_prediction_type": "eps"},
        {"balancing_factor": 0.0},
        {"balancing_factor": -0.5},
        {"balancing_factor": float("nan")},
        {"balancing_factor": float("inf")},
        {"label_loss": "ce", "label_encoding": "binary"},
    ],
)
def test_bad_pipeline_configs_raise(kwargs):
    unet = tiny_unet(2)
    with pytest.raises(ValueError):
        DAKTerPipeline(unet, DAKTerObjective(2).sampling_scheduler(), **kwargs)


def test_bad_call_arguments_raise():
    pipe = make_pipe(2)
    with pytest.raises(ValueError):
        pipe(num_inference_steps=2, output_type="latent")
    with pytest.raises(ValueError):
        pipe(batch_size=3, num_inference_steps=2, generator=[gen(0), gen(1)])
    with pytest.raises(ValueError):
        pipe(num_inference_steps=2, label_noise="scaled")


# --------------------------------------------------------------------- zero terminal SNR
def test_v_prediction_on_zero_terminal_snr_is_finite():
    scheduler = DDIMScheduler(
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        prediction_type="v_prediction",
        beta_schedule="linear",
    )
    pipe = make_pipe(2, scheduler=scheduler, image_prediction_type="v_prediction")
    assert pipe.scheduler.config.rescale_betas_zero_snr
    assert float(pipe.scheduler.alphas_cumprod[-1]) == 0.0
    out = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(0), output_type="pt")
    assert torch.isfinite(out.images).all() and torch.isfinite(out.soft_labels).all()
    assert int(pipe.scheduler.timesteps[0]) == 999

    # and with the scheduler the objective builds for zero-terminal-SNR training
    sampler = DAKTerObjective(2, image_prediction_type="v", zero_terminal_snr=True).sampling_scheduler()
    pipe = make_pipe(2, scheduler=sampler, image_prediction_type="v_prediction")
    out = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(0), output_type="np")
    assert np.isfinite(out.images).all() and np.isfinite(out.soft_labels).all()


def test_v_oracle_on_zero_terminal_snr_follows_algorithm_2():
    scheduler = DAKTerObjective(2, image_prediction_type="v", zero_terminal_snr=True).sampling_scheduler()
    unet = stand_in(2, oracle="v_prediction")
    pipe = make_pipe(2, b=0.8, unet=unet, scheduler=scheduler, image_prediction_type="v_prediction")
    unet.alphas_cumprod = pipe.scheduler.alphas_cumprod
    out = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(2), output_type="pt")
    noise = torch.randn(2, 3, SIZE, SIZE, generator=gen(2))
    inputs, final = expected_inputs(noise, unet.fixed_image, unet.fixed_logits, 0.8, pipe.scheduler, "consistent")
    for seen, want in zip(unet.inputs, inputs):
        assert torch.allclose(seen.double(), want, rtol=1e-4, atol=1e-5)
    assert torch.allclose(out.images.double(), (final[:, :1] / 2 + 0.5).clamp(0, 1), atol=1e-5)
    assert torch.isfinite(out.images).all()


# --------------------------------------------------------------------- any diffusers scheduler
from diffusers import (  # noqa: E402
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)


SCHEDULERS = {
    "ddim": lambda config: DDIMScheduler.from_config(config),
    "dpmsolver++": lambda config: DPMSolverMultistepScheduler.from_config(config),
    "dpmsolver++-epsilon": lambda config: DPMSolverMultistepScheduler.from_config(config, prediction_type="epsilon"),
    "dpmsolver++-v": lambda config: DPMSolverMultistepScheduler.from_config(config, prediction_type="v_prediction"),
    "unipc": lambda config: UniPCMultistepScheduler.from_config(config),
    "euler": lambda config: EulerDiscreteScheduler.from_config(config),
    # Euler ancestral cannot step on x0: set to epsilon, it gets the clean estimate converted
    "euler-ancestral-epsilon": lambda config: EulerAncestralDiscreteScheduler.from_config(
        config, prediction_type="epsilon"
    ),
    "heun": lambda config: HeunDiscreteScheduler.from_config(config),
}


@pytest.mark.parametrize("zero_snr", [False, True], ids=["linear", "zero-snr-v"])
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_turns_a_constant_clean_prediction_into_it(name, zero_snr):
    """A stand-in network that always predicts one clean sample (directly, or as the v output
    whose x0 is that sample) is sampled into exactly that sample, whatever the scheduler."""
    prediction = "v_prediction" if zero_snr else "sample"
    sampler = DAKTerObjective(2, image_prediction_type=prediction, zero_terminal_snr=zero_snr).sampling_scheduler()
    unet = stand_in(2, oracle=None if prediction == "sample" else prediction)
    pipe = make_pipe(2, b=0.6, unet=unet, scheduler=sampler, image_prediction_type=prediction)
    pipe.scheduler = SCHEDULERS[name](pipe.scheduler.config)
    # the stand-in's v output is computed on the alphas the scheduler itself steps on
    pipe.scheduler.set_timesteps(STEPS)
    sigmas = getattr(pipe.scheduler, "sigmas", None)
    unet.alphas_cumprod = pipe.scheduler.alphas_cumprod if sigmas is None else pipe.scheduler.alphas_cumprod.clone()
    out = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(4), output_type="pt")
    assert torch.allclose(out.images, (unet.fixed_image / 2 + 0.5).expand(2, -1, -1, -1), atol=1e-3), name
    assert torch.equal(out.soft_labels, unet.fixed_logits.expand(2, -1, -1, -1))
    assert torch.equal(out.masks, unet.fixed_logits.argmax(dim=1).expand(2, -1, -1))


def test_fast_ddim_step_matches_the_scheduler_step(monkeypatch):
    """The in-place DDIM loop is DDIMScheduler.step, to float rounding, for all image targets."""
    from dakter_hf.pipelines import pipeline_dakter

    for prediction, zero_snr in (("sample", False), ("v_prediction", True), ("epsilon", False)):
        sampler = DAKTerObjective(2, image_prediction_type=prediction, zero_terminal_snr=zero_snr).sampling_scheduler()
        pipe = make_pipe(2, b=0.45, scheduler=sampler, image_prediction_type=prediction)
        fast = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(5), output_type="pt")
        monkeypatch.setattr(pipeline_dakter, "_is_plain_ddim", lambda scheduler, eta: False)
        slow = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(5), output_type="pt")
        monkeypatch.undo()
        assert torch.allclose(fast.images, slow.images, atol=1e-5), prediction
        assert torch.allclose(fast.soft_labels, slow.soft_labels, atol=1e-4), prediction


def test_swapped_scheduler_round_trips_through_save_and_load(tmp_path):
    pipe = make_pipe(2, b=0.5)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    reference = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(3), output_type="np")
    path = str(tmp_path / "dpm")
    pipe.save_pretrained(path)
    with open(os.path.join(path, "scheduler", "scheduler_config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["_class_name"] == "DPMSolverMultistepScheduler"
    with open(os.path.join(path, "model_index.json"), encoding="utf-8") as handle:
        assert json.load(handle)["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    for loaded in (
        DAKTerPipeline.from_pretrained(path),
        DiffusionPipeline.from_pretrained(path, trust_remote_code=True),
    ):
        assert type(loaded.scheduler) is DPMSolverMultistepScheduler
        assert loaded.scheduler.config.prediction_type == "sample"
        got = quiet(loaded)(batch_size=2, num_inference_steps=STEPS, generator=gen(3), output_type="np")
        np.testing.assert_array_equal(got.images, reference.images)
        np.testing.assert_array_equal(got.soft_labels, reference.soft_labels)


def test_scheduler_given_at_construction_keeps_its_class_and_steps_on_x0():
    unet = tiny_unet(2)
    given = DPMSolverMultistepScheduler(prediction_type="epsilon", thresholding=True)
    pipe = DAKTerPipeline(unet, given)
    assert type(pipe.scheduler) is DPMSolverMultistepScheduler
    assert pipe.scheduler.config.prediction_type == "sample" and not pipe.scheduler.config.thresholding
    from diffusers import DDPMScheduler

    assert (
        type(DAKTerPipeline(unet, DDPMScheduler()).scheduler) is DDIMScheduler
    )  # the training scheduler samples as DDIM


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_generation_on_cpu(tmp_path, dtype):
    """fp16 / bf16 weights (`torch_dtype=` at load time) sample on a CPU; outputs come back as float32."""
    pipe = make_pipe(2)
    path = str(tmp_path / "pipe")
    pipe.save_pretrained(path)
    half = quiet(DAKTerPipeline.from_pretrained(path, torch_dtype=dtype))
    assert half.unet.dtype == dtype
    full = pipe(batch_size=2, num_inference_steps=STEPS, generator=gen(6), output_type="pt")
    out = half(batch_size=2, num_inference_steps=STEPS, generator=gen(6), output_type="pt")
    assert out.images.dtype == torch.float32 and out.soft_labels.dtype == torch.float32
    assert torch.isfinite(out.images).all() and torch.isfinite(out.soft_labels).all()
    assert (out.images - full.images).abs().mean() < 0.05
