"""Where the soft label comes from: `final` (the paper), `trajectory` and `posterior` (issue 19)."""

import math

import pytest
import torch

from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.joint.unet import make_joint_unet
from dakter_hf.pipelines.pipeline_dakter import SOFT_LABEL_SOURCES, DAKTerPipeline, has_label_timestep


SIZE, B, STEPS = 16, 2, 6


def tiny_pipeline(num_classes=2, label_timestep=False, b=1.3):
    torch.manual_seed(0)
    extra = {"class_embed_type": "timestep"} if label_timestep else {}
    unet = make_joint_unet(num_classes, "tiny", sample_size=SIZE, **extra)
    objective = DAKTerObjective(num_classes, b, image_prediction_type="v", zero_terminal_snr=True)
    pipe = DAKTerPipeline(
        unet,
        objective.sampling_scheduler(),
        balancing_factor=b,
        class_names=[f"c{i}" for i in range(num_classes)],
        image_prediction_type="v_prediction",
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def record_calls(unet):
    """Every forward call's (sample, timestep, class_labels, output)."""
    calls = []

    def before(module, args, kwargs):
        sample, timestep = args[0], args[1] if len(args) > 1 else kwargs.get("timestep")
        calls.append({"sample": sample.clone(), "timestep": timestep, "class_labels": kwargs.get("class_labels")})

    def after(module, args, kwargs, output):
        calls[-1]["output"] = output.sample.clone()

    unet.register_forward_pre_hook(before, with_kwargs=True)
    unet.register_forward_hook(after, with_kwargs=True)
    return calls


def generators(seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(B)]


def sample(pipe, **options):
    """B samples of STEPS steps from seeds 0..B-1, as tensors; `options` go to the pipeline call."""
    return pipe(batch_size=B, num_inference_steps=STEPS, generator=generators(), output_type="pt", **options)


@pytest.mark.parametrize("num_classes", [2, 5])
@pytest.mark.parametrize("label_timestep", [False, True])
@pytest.mark.parametrize("source", SOFT_LABEL_SOURCES)
def test_each_source_gives_per_pixel_distributions(source, label_timestep, num_classes):
    pipe = tiny_pipeline(num_classes, label_timestep)
    out = sample(pipe, soft_label_source=source, trajectory_steps=3)
    assert out.soft_labels.shape == (B, num_classes, SIZE, SIZE)
    assert torch.isfinite(out.soft_labels).all()
    probabilities = out.soft_labels.softmax(dim=1)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(B, SIZE, SIZE), atol=1e-5)
    assert torch.equal(out.masks, out.soft_labels.argmax(dim=1))  # the hard mask is the soft label's argmax
    again = sample(pipe, soft_label_source=source, trajectory_steps=3)
    assert torch.equal(out.soft_labels, again.soft_labels)  # deterministic per seed


def test_final_is_the_last_steps_logits_and_the_default():
    pipe = tiny_pipeline()
    calls = record_calls(pipe.unet)
    default = sample(pipe)
    assert len(calls) == STEPS
    assert torch.equal(default.soft_labels, calls[-1]["output"][:, 1:])
    final = sample(pipe, soft_label_source="final")
    assert torch.equal(default.soft_labels, final.soft_labels)


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++"])
def test_trajectory_is_the_mean_probability_of_the_last_k_steps(scheduler):
    pipe = tiny_pipeline()
    if scheduler == "dpm++":
        from diffusers import DPMSolverMultistepScheduler

        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    calls = record_calls(pipe.unet)
    out = sample(pipe, soft_label_source="trajectory", trajectory_steps=3)
    expected = torch.stack([c["output"][:, 1:].softmax(dim=1) for c in calls[-3:]]).mean(dim=0)
    assert torch.allclose(out.soft_labels.softmax(dim=1), expected, atol=1e-6)
    # K = 1 is the final step's distribution
    one = sample(pipe, soft_label_source="trajectory", trajectory_steps=1)
    assert torch.allclose(one.soft_labels.softmax(dim=1), calls[-1]["output"][:, 1:].softmax(dim=1), atol=1e-6)
    # the images do not depend on where the soft label comes from
    final = sample(pipe)
    assert torch.equal(final.images, out.images)


def test_posterior_reads_the_label_head_with_the_image_clean():
    pipe = tiny_pipeline(label_timestep=True)
    assert has_label_timestep(pipe.unet)
    calls = record_calls(pipe.unet)
    out = sample(pipe, soft_label_source="posterior", posterior_timestep=300)
    assert len(calls) == STEPS + 1  # the sampler's steps, then one read of the label head
    read = calls[-1]
    assert int(torch.as_tensor(read["timestep"])) == 0  # the image's timestep: clean
    assert read["class_labels"].tolist() == [300] * B  # the labels' own noise level
    # the image channel is the finished image itself (no noise), as returned
    assert torch.allclose(read["sample"][:, :1], out.images * 2 - 1, atol=1e-6)
    assert torch.equal(out.soft_labels, read["output"][:, 1:])
    # the label channels: the final label state, b (2 softmax(last step's logits) - 1),
    # noised again to t = 300 with noise each sample's generator draws after its start noise
    alpha = float(pipe.scheduler.alphas_cumprod[300])
    state = (calls[STEPS - 1]["output"][:, 1:].softmax(dim=1) * 2 - 1) * pipe.config.balancing_factor
    noise = []
    for g in generators():
        torch.randn((1, 3, SIZE, SIZE), generator=g)  # the start noise of sampling
        noise.append(torch.randn((1, 2, SIZE, SIZE), generator=g))
    expected = math.sqrt(alpha) * state + math.sqrt(1 - alpha) * torch.cat(noise)
    # (the last DDIM step ends at alphas_cumprod[0] = 0.9999, not 1: the state is x0 up to 1 % of its noise)
    assert (read["sample"][:, 1:] - expected).abs().max() < 0.03
    assert (read["sample"][:, 1:] - math.sqrt(alpha) * state).abs().max() > 0.5  # the noise is really there


def test_segment_defaults_to_label_noise_alone_and_checks_its_input():
    pipe = tiny_pipeline(label_timestep=True)
    calls = record_calls(pipe.unet)
    images = torch.rand(3, 1, SIZE, SIZE) * 2 - 1
    g = torch.Generator().manual_seed(5)
    logits = pipe.segment(images, generator=g)
    assert logits.shape == (3, 2, SIZE, SIZE)
    last = pipe.scheduler.config.num_train_timesteps - 1
    assert calls[0]["class_labels"].tolist() == [last] * 3
    assert torch.equal(calls[0]["sample"][:, :1], images)
    # zero terminal SNR: at the last timestep the label input is the noise alone
    noise = torch.randn((3, 2, SIZE, SIZE), generator=torch.Generator().manual_seed(5))
    alpha = float(pipe.scheduler.alphas_cumprod[last])
    assert torch.allclose(calls[0]["sample"][:, 1:], math.sqrt(1 - alpha) * noise, atol=1e-5)
    with pytest.raises(ValueError, match="label_timestep"):
        pipe.segment(images, label_timestep=1000)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        pipe.segment(images[:, 0])


def test_a_paper_unet_gets_the_label_level_as_its_one_timestep():
    pipe = tiny_pipeline(label_timestep=False)
    calls = record_calls(pipe.unet)
    pipe.segment(torch.zeros(1, 1, SIZE, SIZE), label_timestep=250)
    assert int(torch.as_tensor(calls[0]["timestep"])) == 250 and calls[0]["class_labels"] is None


def test_bad_soft_label_options_are_refused():
    pipe = tiny_pipeline()
    for kwargs, match in (
        ({"soft_label_source": "mean"}, "soft_label_source"),
        ({"soft_label_source": "trajectory", "trajectory_steps": 0}, "trajectory_steps"),
        ({"soft_label_source": "posterior", "posterior_timestep": -1}, "posterior_timestep"),
    ):
        with pytest.raises(ValueError, match=match):
            pipe(batch_size=1, num_inference_steps=2, **kwargs)


def test_the_objective_trains_the_segmenter_on_a_fraction_of_samples():
    torch.manual_seed(0)
    images = torch.rand(8, 1, SIZE, SIZE) * 2 - 1
    masks = torch.randint(0, 2, (8, SIZE, SIZE))
    plain_unet = make_joint_unet(2, "tiny", sample_size=SIZE)
    paper = DAKTerObjective(2, 1.0, image_prediction_type="v", zero_terminal_snr=True)
    same = DAKTerObjective(2, 1.0, image_prediction_type="v", zero_terminal_snr=True, independent_label_timestep=0.0)
    a = paper(plain_unet, images, masks, generator=torch.Generator().manual_seed(3))
    b = same(plain_unet, images, masks, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.loss, b.loss) and torch.equal(a.timesteps, b.timesteps)  # p = 0 is the paper's draws

    unet = make_joint_unet(2, "tiny", sample_size=SIZE, class_embed_type="timestep")
    calls = record_calls(unet)
    every = DAKTerObjective(2, 1.0, image_prediction_type="v", zero_terminal_snr=True, independent_label_timestep=1.0)
    out = every(unet, images, masks, generator=torch.Generator().manual_seed(3))
    assert out.timesteps.tolist() == [0] * 8  # every image clean
    assert float(out.image_loss) == 0.0  # a given image is not a generated one: no image loss
    assert float(out.label_loss) > 0
    labels = calls[0]["class_labels"]
    assert labels.shape == (8,) and len(set(labels.tolist())) > 1  # each sample its own label timestep
    # the image channel is noised at t = 0 only (within the schedule's first step)
    assert (calls[0]["sample"][:, :1] - images).abs().max() < 0.05

    half = DAKTerObjective(2, 1.0, image_prediction_type="v", zero_terminal_snr=True, independent_label_timestep=0.5)
    out = half(unet, images, masks, generator=torch.Generator().manual_seed(3))
    clean = out.timesteps == 0
    assert 0 < int(clean.sum()) < 8
    with pytest.raises(ValueError, match="independent_label_timestep"):
        DAKTerObjective(2, 1.0, independent_label_timestep=1.5)
    with pytest.raises(ValueError, match="label-timestep embedding"):  # a plain UNet cannot tell the two apart
        every(plain_unet, images, masks, generator=torch.Generator().manual_seed(3))


def test_a_wrapped_unet_still_gets_its_label_timestep():
    """Training passes the UNet as wrapped by accelerate (DDP): the label timestep must still reach it."""
    unet = make_joint_unet(2, "tiny", sample_size=SIZE, class_embed_type="timestep")
    wrapper = torch.nn.Module()
    wrapper.module = unet
    wrapper.forward = lambda *args, **kwargs: unet(*args, **kwargs)
    assert has_label_timestep(wrapper)
    calls = record_calls(unet)
    objective = DAKTerObjective(
        2, 1.0, image_prediction_type="v", zero_terminal_snr=True, independent_label_timestep=1.0
    )
    objective(wrapper, torch.zeros(2, 1, SIZE, SIZE), torch.zeros(2, SIZE, SIZE, dtype=torch.long))
    assert calls[0]["class_labels"] is not None


def test_half_precision_weights_sample_and_segment_with_a_label_timestep():
    pipe = tiny_pipeline(label_timestep=True).to(torch.bfloat16)
    out = sample(pipe, soft_label_source="posterior")
    assert torch.isfinite(out.soft_labels).all()
    assert pipe.segment(torch.zeros(1, 1, SIZE, SIZE)).dtype == torch.float32
