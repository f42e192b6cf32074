"""`dakter generate --scheduler NAME --steps K --dtype fp16|bf16|fp32` (dakter_hf.generation.schedulers)."""

import json

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
)
from helpers import generate_cli, tiny_pipeline

from dakter_hf.generation.schedulers import (
    SCHEDULERS,
    configure_sampling,
    make_scheduler,
)
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline


torch.set_num_threads(1)


def build_pipeline():
    """v-prediction on zero-terminal-SNR betas: what every scheduler here must sample from."""
    return tiny_pipeline(v_prediction=True)


# the saved one (tests/conftest.py), the same v-prediction pipeline
V_PIPELINE = pytest.mark.parametrize("pipeline_dir", ["v"], indirect=True)


def _supports_zero_snr(name):
    import inspect

    import diffusers

    return "rescale_betas_zero_snr" in inspect.signature(getattr(diffusers, SCHEDULERS[name][0]).__init__).parameters


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_named_scheduler_samples(name):
    pipe = build_pipeline()
    pipe.set_progress_bar_config(disable=True)
    if not _supports_zero_snr(name):  # e.g. Heun: it would sample on the un-rescaled betas
        with pytest.raises(ValueError, match="zero terminal SNR"):
            configure_sampling(pipe, name)
        return
    source = pipe.scheduler
    scheduler_class, _ = configure_sampling(pipe, name)
    assert scheduler_class == SCHEDULERS[name][0]
    assert pipe.scheduler.config.rescale_betas_zero_snr and pipe.scheduler.config.timestep_spacing == "trailing"
    # the schedule itself, not just the flag: the last alpha-bar is (close to) zero as in the source
    assert float(pipe.scheduler.alphas_cumprod[-1]) < 1e-6 and float(source.alphas_cumprod[-1]) < 1e-6
    out = pipe(batch_size=1, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.isfinite(out.images).all() and np.isfinite(out.soft_labels).all()


def test_scheduler_names_and_class_names():
    config = build_pipeline().scheduler.config
    assert type(make_scheduler("DPMSolverMultistepScheduler", config)) is DPMSolverMultistepScheduler
    assert type(make_scheduler("dpmsolver++", config)) is DPMSolverMultistepScheduler
    euler_a = make_scheduler("euler-a", config)
    assert type(euler_a) is EulerAncestralDiscreteScheduler and euler_a.config.prediction_type == "epsilon"
    with pytest.raises(ValueError, match="--scheduler"):
        make_scheduler("plms-fast", config)


@V_PIPELINE
def test_cli_generate_records_scheduler_and_dtype(pipeline_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    flags = "-n 2 --batch-size 2 --steps 3 --scheduler dpm++ --dtype bf16 --device cpu --no-save-to-disk"
    code = generate_cli(pipeline_dir, out, flags)
    assert code == 0
    config = json.loads((out / "generation_config.json").read_text())
    assert config["scheduler"] == "DPMSolverMultistepScheduler" and config["dtype"] == "bf16"
    card = (out / "README.md").read_text()
    assert "DPMSolverMultistepScheduler, 3 steps" in card and "bf16 weights" in card


@V_PIPELINE
def test_default_generation_records_ddim_fp32(pipeline_dir, tmp_path):
    out = tmp_path / "gen"
    assert generate_cli(pipeline_dir, out, "-n 1 --steps 2 --device cpu --no-save-to-disk") == 0
    config = json.loads((out / "generation_config.json").read_text())
    assert config["scheduler"] == "DDIMScheduler" and config["dtype"] == "fp32"


@V_PIPELINE
def test_fp16_on_cpu_works_or_fails_in_one_line(pipeline_dir, tmp_path):
    pipe = DAKTerPipeline.from_pretrained(pipeline_dir, torch_dtype=torch.float16)
    pipe.set_progress_bar_config(disable=True)
    try:
        configure_sampling(pipe, None, "fp16")
    except ValueError as error:  # a torch build without CPU half kernels: one clear line
        assert "--dtype fp16" in str(error) and "\n" not in str(error)
        return
    out = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.isfinite(out.images).all() and np.isfinite(out.soft_labels).all()


def test_unsupported_dtype_gives_one_line_error(monkeypatch):
    pipe = build_pipeline()

    def broken(*args, **kwargs):
        raise RuntimeError("\"slow_conv2d_cpu\" not implemented for 'Half'\nmore trace")

    pipe.to(dtype=torch.float16)
    monkeypatch.setattr(pipe.unet, "forward", broken)
    with pytest.raises(ValueError, match=r"--dtype fp16 does not run on cpu .*slow_conv2d_cpu.*use --dtype fp32"):
        configure_sampling(pipe, None, "fp16")
