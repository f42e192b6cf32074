"""benchmarks/gpu_check.sh (the GPU check of issue 18) in its tiny CPU mode, so the script cannot rot.

The tiny mode is the CPU path of the same script: every command of both parts runs, at tiny sizes.
"""

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dakter_hf.experiment.config import load_experiment_config


ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def gpu_check(*args, folder, timeout=240, **variables):
    """`bash benchmarks/gpu_check.sh ARGS FOLDER` with this Python, one thread, and the script's variables."""
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **variables)
    for name in ("GPU_CHECK_TINY", "GPU_CHECK_PROFILE", "GPU_CHECK_DRY_RUN", "OUT"):
        if name not in variables:
            env.pop(name, None)
    command = ["bash", str(SCRIPT), *args, str(folder)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def brought_back(folder):
    """The files under FOLDER, checked against what the device tool brings back from $OUT."""
    files = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())
    assert len(files) <= 8 and all(f.count("/") <= 2 for f in files), files
    assert all(re.fullmatch(r"[A-Za-z0-9._/-]+", f) for f in files), files
    assert sum((Path(folder) / f).stat().st_size for f in files) < 16 * 2**20
    return files


def assert_in_order(text, expected):
    position = 0
    for line in expected:
        found = text.find(line, position)
        assert found >= 0, f"{line!r} missing (after position {position}) in:\n{text}"
        position = found + len(line)


def versions_block(log):
    assert "== the card, driver and versions" in log
    assert "nvidia-smi" in log or "memory.total" in log  # the card's line, or why there is none
    assert " torch " in log and "CUDA available" in log
    for package in ("diffusers", "transformers", "accelerate", "datasets", "dakter_hf"):
        assert f"  {package} " in log


def test_tiny_throughput_runs_every_command_and_prints_the_goals(tmp_path):
    done = gpu_check("--tiny", "--profile", "throughput", folder=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "throughput.log").read_text()
    assert done.stdout == log  # what is printed is what is logged
    assert log.startswith("# gpu_check.sh throughput: tiny (CPU rehearsal")
    versions_block(log)
    assert_in_order(
        log,
        [
            "== sampling",
            "benchmarks/bench_sampling.py --device cpu --preset tiny",
            "DDIMPipeline   median",
            "ratio DAKTer/DDIM = ",
            "== loop_vs_bare",
            "--loop-only",
            "data path alone",
            "bare step loop",
            "training loop, decode once (default)",
            "training loop, --data_cache none",
            "-- loop_vs_bare: ",
            "== train_throughput",
            "--no-loop --no-memory --options fused_adamw,tf32,bf16,channels_last",
            "plain diffusers loop (eager, fp32)",
            "DAKTer objective (eager, fp32)",
            "DAKTer + channels_last",
            "skipped bf16: needs CUDA",
            "fastest: ",
            "-- train_throughput: ",
            "== profile",
            "top 10 operators by self_cpu_time_total",
            "Self CPU time total",
            "-- profile: ",
            "== train_compiled",
            "--no-loop --no-memory --options all",
            "plain diffusers loop (eager, fp32)",
            "skipped all: needs CUDA",
            "-- train_compiled: ",
            "== goals against the numbers",
            "MFU >= 30 % (measured: tiny, 32 px, batch 2): n/a on cpu",
            "loop >= 0.9x the bare step",
            "ratio ",
            "sampling overhead <= 1.03x",
            "ratio DAKTer/DDIM = ",
            "gpu_check.sh throughput: done in",
        ],
    )
    assert "FAILED" not in log and "missing" not in log
    assert "generation peak RSS" not in log  # the memory check is not part of this run
    assert brought_back(tmp_path) == ["throughput.err", "throughput.log"]
    errors = (tmp_path / "throughput.err").read_text()  # each command's stderr behind its name
    assert_in_order(
        errors, ["== sampling", "== loop_vs_bare", "== train_throughput", "== profile", "== train_compiled"]
    )


def test_tiny_chain_runs_the_experiment_and_logs_its_report(tmp_path):
    done = gpu_check("--tiny", "chain", folder=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / "chain.log").read_text()
    assert log.startswith("# gpu_check.sh chain: tiny (CPU rehearsal")
    versions_block(log)
    assert_in_order(
        log,
        [
            "experiment file: ",
            "(tiny, simulate:12,6, 32 px, 4 joint steps, seeds [0, 1, 2])",
            "== experiment",
            "-m dakter_hf.cli experiment --config",
            "experiment gpu_check_tiny: 11 steps (0 cached)",
            "joint ce-onehot-bauto: done",
            "student segformer-b0-real-s2: done",
            "student segformer-b0-dakter-s2-x1: done",
            "== the joint model: card and training rate",
            "card: # ",
            '"step": 4',
            "images_per_second",
            "== the report",
            "## Table 1",
            "| segformer-b0 | real |",
            "| segformer-b0 | dakter-kd |",
            "## Joint models and generated sets",
            "| dakter-kd | 4 |",
            "## Generation quality",
            "speckle ENL",
            "oil pixel fraction",
            "spectrum mean abs. diff.",
            "gpu_check.sh chain: done in",
        ],
    )
    assert "FAILED" not in log
    assert brought_back(tmp_path) == ["chain.err", "chain.log", "chain_report.tar.gz", "report.md"]
    assert (tmp_path / "report.md").read_text().startswith("# Experiment `gpu_check_tiny`")
    work = re.search(r"work files: (\S+)", log).group(1)
    assert not os.path.exists(work)  # the tiny mode's temporary work folder is removed
    with tarfile.open(tmp_path / "chain_report.tar.gz") as archive:
        names = archive.getnames()
    for name in (
        "experiment.yaml",
        "joint_card.md",
        "joint_loss_history.jsonl",
        "report/report.md",
        "report/report.json",
    ):
        assert name in names, names
    assert any(n.startswith("report/") and n.endswith(".png") for n in names)
    assert not [n for n in names if n.endswith((".safetensors", ".parquet"))]  # no models or datasets


@pytest.mark.parametrize("part", ["throughput", "chain"])
def test_full_sizes_are_the_issues(tmp_path, part):
    """The GPU sizes, as a dry run prints them (no command runs; no GPU needed)."""
    done = gpu_check("--dry-run", "--profile", part, folder=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (tmp_path / f"{part}.log").read_text()
    if part == "throughput":
        assert "bench_sampling.py --device cuda --preset small --resolution 128 --batch 128 --steps 50" in log
        assert "bench_train.py --device cuda --preset small --resolution 128 --batch 64 --loop-only" in log
        paper = "bench_train.py --device cuda --preset paper --resolution 256 --batch 16 "
        assert_in_order(log, [paper, "--options fused_adamw,tf32,bf16,channels_last", "profile_step.py --device cuda"])
        assert_in_order(log, ["--preset paper --resolution 256 --batch 16", paper, "--options compile,all"])
    else:
        assert "experiment --config configs/experiments/sos_palsar_gpu_long.yaml" in log
        assert re.search(r"--report-dir \S+/report\n", log)  # into the work folder, then packed into FOLDER


def test_gpu_experiment_file_is_one_long_dakter_model_and_two_arms():
    config = load_experiment_config(str(ROOT / "configs" / "experiments" / "sos_palsar_gpu_long.yaml"))
    assert [arm.name for arm in config.arms] == ["real", "dakter-kd"] and config.seeds == [0, 1, 2]
    assert config.data["source"] == "sos:.offline/sos"  # where offline-pack puts its slice
    joint = config.joint
    assert (joint["image_prediction"], joint["zero_terminal_snr"], joint["resolution"]) == ("v", True, 128)
    assert joint["max_train_steps"] >= 6 * 700 and joint["max_train_minutes"] >= 5  # >= 5 min of joint training
    assert [s["student"] for s in config.students] == ["segformer-b0"] and config.students[0]["max_steps"] > 0
    assert not config.show_real_images


def test_a_failing_command_is_reported_and_fails_the_part(tmp_path):
    done = gpu_check("--tiny", "chain", folder=tmp_path, timeout=120, CHAIN_SOURCE="nosuch:1")
    assert done.returncode == 1
    log = (tmp_path / "chain.log").read_text()
    expected = ["-- experiment FAILED (exit 2)", "nosuch:1 does not exist", "gpu_check.sh chain: FAILED: experiment"]
    assert_in_order(log, expected)
