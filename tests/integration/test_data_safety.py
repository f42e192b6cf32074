"""Never lose or mix a user's data (issue 11): each example of the issue, plus the general rules."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from helpers import REPO_ROOT
from PIL import Image

from dakter_hf.cli import main
from dakter_hf.data.raster import Normalization, normalize_to_uint8, read_sar_grey
from dakter_hf.errors import DataError, FolderError
from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.joint.training import JointTrainingArguments, train
from dakter_hf.joint.unet import make_joint_unet
from dakter_hf.utils.ownership import LOCK, MARKER, FolderLock, read_marker


def tree(folder):
    """{relative path: bytes} of every file under `folder` (what "nothing lost or mixed" compares)."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = handle.read()
    return found


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pipe") / "pipeline")
    torch.manual_seed(0)
    DAKTerPipeline(unet=make_joint_unet(2, "tiny", sample_size=16), scheduler=DAKTerObjective(2, 0.4).sampling_scheduler(), balancing_factor=0.4, class_names=["background", "oil"]).save_pretrained(path)
    return path


def generate(pipeline, out, *extra):
    return main(["generate", "--pipeline", pipeline, "--out", str(out), "-n", "2", "--steps", "2", "--batch-size", "2", "--shard-size", "2", "--device", "cpu", *extra])


# ---- the examples ---------------------------------------------------------------


def test_generate_into_a_data_folder_is_refused(pipeline_dir, tmp_path, capsys):
    data = tmp_path / "real"
    assert main(["data", "--source", "simulate:4", "--size", "16", "--out", str(data)]) == 0
    before = tree(data)
    assert generate(pipeline_dir, data) == 2
    assert "written by `data`" in capsys.readouterr().err
    assert tree(data) == before


def test_training_into_a_used_folder_needs_resume_or_overwrite(tmp_path, one_thread):
    common = dict(data="simulate:8", resolution=16, unet_preset="tiny", train_batch_size=4, max_train_steps=2, checkpointing_steps=1, checkpoints_total_limit=5, report_to="none", logging_steps=1, learning_rate=1e-3)
    out = tmp_path / "run"
    train(JointTrainingArguments(output_dir=str(out), **common))
    before = tree(out)
    with pytest.raises(FolderError, match="--resume_from_checkpoint latest"):
        train(JointTrainingArguments(output_dir=str(out), **common))
    with pytest.raises(FolderError, match="other settings"):
        train(JointTrainingArguments(output_dir=str(out), resume_from_checkpoint="latest", **{**common, "seed": 1}))
    assert tree(out) == before
    # --overwrite starts a fresh run: the old checkpoints are gone, the new ones kept
    train(JointTrainingArguments(output_dir=str(out), overwrite=True, **{**common, "seed": 1, "max_train_steps": 1}))
    assert sorted(n for n in os.listdir(out) if n.startswith("checkpoint-")) == ["checkpoint-1"]
    assert read_marker(str(out))["settings"]["seed"] == 1


def test_overwrite_never_deletes_the_commands_own_input(pipeline_dir, tmp_path, capsys):
    before = tree(pipeline_dir)
    assert generate(pipeline_dir, pipeline_dir, "--overwrite") == 2
    assert "overlaps the input" in capsys.readouterr().err
    assert generate(pipeline_dir, os.path.join(pipeline_dir, "inside"), "--overwrite") == 2
    assert tree(pipeline_dir) == before and not os.path.exists(os.path.join(pipeline_dir, "inside"))
    source = tmp_path / "raw"
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(source / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(source / "masks" / "a.png")
    raw = tree(source)
    assert main(["data", "--source", f"folder:{source}", "--classes", "background,oil", "--out", str(source), "--overwrite"]) == 2
    assert main(["data", "--source", f"folder:{source}", "--classes", "background,oil", "--out", str(tmp_path), "--overwrite"]) == 2
    assert tree(source) == raw


def test_a_plain_ddpm_pipeline_is_not_a_dakter_model(tmp_path, capsys):
    from diffusers import DDIMScheduler, DDPMPipeline, UNet2DModel

    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 8), down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, layers_per_block=1)
    DDPMPipeline(unet=unet, scheduler=DDIMScheduler()).save_pretrained(tmp_path / "ddpm")
    assert generate(str(tmp_path / "ddpm"), tmp_path / "out") == 2
    assert "DDPMPipeline, not a DAKTer pipeline" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_hub_id_is_tried_on_the_hub(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: no request even without the env
    assert generate("someone/dakter-model", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "Hub repo" in error and "no model_index.json there" not in error


@pytest.mark.parametrize("flag, value", [("--steps", "0"), ("--steps", "-3"), ("--steps", "5000"), ("--eta", "1.5"), ("--batch-size", "0"), ("--shard-size", "0"), ("--label-noise", "odd")])
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


def test_sixteen_bit_mask_values_are_not_wrapped(tmp_path):
    from dakter_hf.data.folder import load_folder

    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.full((8, 8), 90, np.uint8)).save(root / "images" / "a.png")
    mask = np.zeros((8, 8), np.uint16)
    mask[0, 0] = 257  # would wrap to 1 (a valid class) as uint8
    Image.fromarray(mask).save(root / "masks" / "a.png")
    with pytest.raises(DataError, match=r"a\.png.*\[257\]"):
        load_folder(str(root), ["background", "oil"])


# ---- SAR-native inputs -------------------------------------------------------------------


def _ramp(dtype, low, high):
    values = np.linspace(low, high, 64 * 64).reshape(64, 64)
    return values.astype(dtype)


def test_sixteen_bit_png_and_tiff_and_float_tiff_round_trip(tmp_path):
    import tifffile

    sixteen = _ramp(np.uint16, 1000, 60000)
    Image.fromarray(sixteen).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "b.tif", sixteen)
    sigma0 = _ramp(np.float32, 0.001, 0.5)
    tifffile.imwrite(tmp_path / "c.tif", sigma0)
    expected = normalize_to_uint8(sixteen.astype(np.float64))
    # the documented default: 1st..99th percentile stretched to 0..255
    low, high = np.percentile(sixteen.astype(np.float64), [1, 99])
    by_hand = np.clip(np.round((sixteen - low) / (high - low) * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(expected, by_hand)
    assert np.array_equal(read_sar_grey(str(tmp_path / "a.png")), by_hand)
    assert np.array_equal(read_sar_grey(str(tmp_path / "b.tif")), by_hand)
    grey = read_sar_grey(str(tmp_path / "c.tif"))
    assert grey.min() == 0 and grey.max() == 255 and len(np.unique(grey)) > 200  # not all zeros, not clipped flat
    db = read_sar_grey(str(tmp_path / "c.tif"), Normalization(intensity="db"))
    values_db = 10 * np.log10(sigma0.astype(np.float64))
    low, high = np.percentile(values_db, [1, 99])
    assert np.array_equal(db, np.clip(np.round((values_db - low) / (high - low) * 255), 0, 255).astype(np.uint8))
    eight = (np.arange(64 * 64) % 256).astype(np.uint8).reshape(64, 64)
    Image.fromarray(eight).save(tmp_path / "d.png")
    assert np.array_equal(read_sar_grey(str(tmp_path / "d.png")), eight)  # 8-bit is used as stored


def test_normalisation_is_recorded_by_dakter_data(tmp_path):
    import tifffile

    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    tifffile.imwrite(root / "images" / "a.tif", _ramp(np.float32, 0.001, 0.5))
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "masks" / "a.png")
    out = tmp_path / "out"
    assert main(["data", "--source", f"folder:{root}", "--classes", "background,oil", "--intensity", "db", "--clip-percentiles", "2,98", "--out", str(out)]) == 0
    marker = read_marker(str(out))
    assert marker["settings"]["normalization"]["intensity"] == "db"
    assert marker["settings"]["normalization"]["clip_percentiles"] == [2.0, 98.0]
    assert "intensity db, 2-98 percentile stretch" in (out / "README.md").read_text()
    # a student trained on this folder inherits the recorded normalisation (and `dakter segment` applies it)
    from dakter_hf.students.train import StudentArguments, input_normalization

    assert input_normalization(StudentArguments(real=str(out), mode="real")) == Normalization(intensity="db", clip_percentiles=(2.0, 98.0))
    with pytest.raises(SystemExit):
        main(["data", "--source", f"folder:{root}", "--out", str(tmp_path / "x"), "--intensity", "log"])
    assert main(["data", "--source", f"folder:{root}", "--classes", "background,oil", "--clip-percentiles", "9", "--out", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "y").exists()


# ---- every command twice into one folder --------------------------------------------------


def test_every_command_twice_with_other_settings_keeps_the_first_run(pipeline_dir, tmp_path, capsys, one_thread):
    runs = {
        "data": (["data", "--source", "simulate:4", "--size", "16"], ["--seed", "1"]),
        "generate": (["generate", "--pipeline", pipeline_dir, "-n", "2", "--steps", "2", "--device", "cpu"], ["--seed", "5"]),
        "demo": (["demo", "--steps", "2", "--samples", "2", "--inference-steps", "2"], ["--samples", "3"]),
    }
    for name, (first, second) in runs.items():
        out = tmp_path / name
        assert main(first + ["--out", str(out)]) == 0, name
        before = tree(out)
        assert main(first + second + ["--out", str(out)]) == 2, name
        assert tree(out) == before, name
        # the same settings again: continued or left as it is, never mixed
        assert main(first + ["--out", str(out)]) == 0, name
        assert read_marker(str(out))["settings_hash"] == json.loads(before[MARKER])["settings_hash"]
    # students: the same rule through train_student.py
    from dakter_hf.data.save import save_dataset
    from dakter_hf.data.simulate import simulate_sar
    from dakter_hf.students.train import main as train_student

    save_dataset(simulate_sar(4, size=32, seed=0, num_test_samples=2), str(tmp_path / "real"))
    tiny = json.dumps(dict(hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1], sr_ratios=[1, 1, 1, 1], decoder_hidden_size=8))
    student = ["--real", str(tmp_path / "real"), "--mode", "real", "--student", "segformer-b0", "--student_config", tiny, "--resolution", "32", "--max_steps", "1", "--per_device_train_batch_size", "2", "--save_strategy", "no", "--output_dir", str(tmp_path / "student")]
    train_student(student)
    before = tree(tmp_path / "student")
    with pytest.raises(FolderError):
        train_student(student + ["--learning_rate", "0.5"])
    assert tree(tmp_path / "student") == before


# ---- locks and leftovers ------------------------------------------------------------------


def test_a_second_writer_is_refused_by_the_lock(pipeline_dir, tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "gen"
        out.mkdir()
        (out / LOCK).write_text(str(holder.pid))
        assert generate(pipeline_dir, out) == 2
        assert f"PID {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert generate(pipeline_dir, out) == 0  # the holder is gone: its stale lock is taken over
    assert not (out / LOCK).exists()
    with FolderLock(str(tmp_path / "x")) as lock:
        assert open(lock.path).read() == str(os.getpid())
    assert not os.path.exists(lock.path)


def test_launchers_answer_user_errors_in_one_line(tmp_path):
    root = str(REPO_ROOT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    for script, args in (("train_joint.py", ["--data", str(tmp_path / "absent"), "--output_dir", str(tmp_path / "o")]), ("train_student.py", ["--real", str(tmp_path / "absent"), "--mode", "real", "--output_dir", str(tmp_path / "s")])):
        result = subprocess.run([sys.executable, os.path.join(root, "training", script), *args], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "absent" in result.stderr.strip().splitlines()[-1]
        assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_leftover_staging_is_removed_on_the_next_run(pipeline_dir, tmp_path):
    out = tmp_path / "gen"
    assert generate(pipeline_dir, out) == 0
    (out / "data" / "train-00000-of-00001.parquet.tmp").write_bytes(b"half")
    (out / "hf.tmp-abc").mkdir()
    assert generate(pipeline_dir, out) == 0
    assert not (out / "data" / "train-00000-of-00001.parquet.tmp").exists() and not (out / "hf.tmp-abc").exists()
    data = tmp_path / "ds"
    (tmp_path / "ds.tmp-old").mkdir()
    assert main(["data", "--source", "simulate:2", "--size", "16", "--out", str(data)]) == 0
    assert not (tmp_path / "ds.tmp-old").exists()


def test_model_card_names_the_final_folder(tmp_path, one_thread):
    out = tmp_path / "run"
    final = train(JointTrainingArguments(output_dir=str(out), data="simulate:8", resolution=16, unet_preset="tiny", train_batch_size=4, max_train_steps=1, report_to="none"))
    card = open(os.path.join(final, "README.md")).read()
    assert final in card and "pipeline.tmp" not in card


def test_the_pipeline_config_records_the_training_normalisation(tmp_path, one_thread):
    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(1, 60000, (16, 16)).astype(np.uint16)).save(root / "images" / f"{i}.png")
        Image.fromarray((rng.random((16, 16)) > 0.7).astype(np.uint8)).save(root / "masks" / f"{i}.png")
    assert main(["data", "--source", f"folder:{root}", "--classes", "background,oil", "--intensity", "db", "--out", str(tmp_path / "ds")]) == 0
    final = train(JointTrainingArguments(output_dir=str(tmp_path / "run"), data=str(tmp_path / "ds"), resolution=16, unet_preset="tiny", train_batch_size=2, max_train_steps=1, report_to="none"))
    recorded = json.loads(open(os.path.join(final, "model_index.json")).read())["input_normalization"]
    assert recorded["intensity"] == "db" and recorded["clip_percentiles"] is None
    assert DAKTerPipeline.from_pretrained(final).config.input_normalization["intensity"] == "db"
    with pytest.raises(ValueError, match="folder:ROOT"):
        from dakter_hf.data.options import normalization_from_args

        normalization_from_args(type("A", (), {"intensity": "db", "clip_percentiles": None})(), "sos:/data")


def test_data_notices_changed_input_files_and_restores_an_interrupted_replace(tmp_path, capsys):
    source = tmp_path / "raw"
    (source / "images").mkdir(parents=True)
    (source / "masks").mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((8, 8), 100, np.uint8)).save(source / "images" / f"{name}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(source / "masks" / f"{name}.png")
    args = ["data", "--source", f"folder:{source}", "--classes", "background,oil", "--out", str(tmp_path / "ds")]
    assert main(args) == 0
    assert main(args) == 0 and "nothing to do" in capsys.readouterr().out
    Image.fromarray(np.full((8, 8), 50, np.uint8)).save(source / "images" / "c.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(source / "masks" / "c.png")
    before = tree(tmp_path / "ds")
    assert main(args) == 2 and "input files" in capsys.readouterr().err
    assert tree(tmp_path / "ds") == before
    # a run killed between the two renames of a replace leaves only NAME.old-*: it is put back
    os.replace(tmp_path / "ds", tmp_path / "ds.old-xyz")
    assert main(args) == 2  # refused (the source changed), but the old copy is back in place
    assert tree(tmp_path / "ds") == before and not (tmp_path / "ds.old-xyz").exists()


@pytest.mark.parametrize(
    "argv, word",
    [
        (["--checkpointing_steps", "0"], "--checkpointing_steps"),
        (["--logging_steps", "-1"], "--logging_steps"),
        (["--sample_inference_steps", "0"], "--sample_inference_steps"),
        (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit"),
        (["--learning_rate", "0"], "--learning_rate"),
        (["--max_train_minutes", "0"], "--max_train_minutes"),
        (["--resolution", "0"], "--resolution"),
        (["--data_cache", "disk"], "--data_cache"),
        (["--intensity", "log"], "--intensity"),
        (["--clip_percentiles", "50,10"], "--clip-percentiles"),
    ],
)
def test_training_arguments_are_checked_before_anything_runs(argv, word, tmp_path):
    from dakter_hf.joint.training import parse_args

    with pytest.raises(ValueError, match=word):
        parse_args(argv + ["--output_dir", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()


def test_config_values_are_not_silently_converted(tmp_path):
    from dakter_hf.joint.training import parse_args

    path = tmp_path / "c.yaml"
    path.write_text("resolution: 16.5\n")
    with pytest.raises(ValueError, match="resolution"):
        parse_args(["--config", str(path)])
    path.write_text("max_train_steps: true\n")
    with pytest.raises(ValueError, match="max_train_steps"):
        parse_args(["--config", str(path)])
