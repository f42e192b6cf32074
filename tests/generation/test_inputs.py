"""What `dakter generate` refuses before it writes anything: not a DAKTer model, an unreachable Hub id, bad options."""

import pytest
from helpers import run_generate

from dakter_hf.cli import main


def test_a_plain_ddpm_pipeline_is_not_a_dakter_model(tmp_path, capsys):
    from diffusers import DDIMScheduler, DDPMPipeline, UNet2DModel

    unet = UNet2DModel(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        layers_per_block=1,
    )
    DDPMPipeline(unet=unet, scheduler=DDIMScheduler()).save_pretrained(tmp_path / "ddpm")
    assert run_generate(str(tmp_path / "ddpm"), tmp_path / "out") == 2
    assert "DDPMPipeline, not a DAKTer pipeline" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_hub_id_is_tried_on_the_hub(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # read at import: no request even without the env
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert run_generate("someone/dakter-model", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "Hub repo" in error and "no model_index.json there" not in error


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--steps", "0"),
        ("--steps", "-3"),
        ("--steps", "5000"),
        ("--eta", "1.5"),
        ("--batch-size", "0"),
        ("--shard-size", "0"),
        ("--label-noise", "odd"),
    ],
)
def test_invalid_generation_options_write_nothing(pipeline_dir, tmp_path, capsys, flag, value):
    out = tmp_path / "gen"
    args = ["generate", "--pipeline", pipeline_dir, "--out", str(out), "-n", "2", "--steps", "2", "--device", "cpu"]
    code = main(args + [flag, value]) if flag != "--label-noise" else None
    if code is None:
        with pytest.raises(SystemExit):
            main(args + [flag, value])
    else:
        assert code == 2
        assert flag in capsys.readouterr().err
    assert not out.exists()
    assert main(args) == 0  # the corrected command runs
