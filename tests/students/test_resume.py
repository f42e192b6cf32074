"""Students resume like joint training (issue 16, point 2).

* real runs of `training/train_student.py`, killed (SIGKILL) at many points, checkpoint writes included,
  and resumed with `--resume_from_checkpoint latest`, end with exactly the weights of an uninterrupted
  run (`kill_driver.py`; DAKTER_ALL_KILL_POINTS=1 kills at every file operation of the run);
* a used `--output_dir` needs `--resume_from_checkpoint` or `--overwrite`; a finished run says so;
* a resume skips an incomplete checkpoint with a warning (a named one is refused);
* a refused run writes nothing.
"""

import json
import logging
import os
import socket
import subprocess
import sys

import pytest
import torch
from helpers import REPO_ROOT
from safetensors.torch import load_file
from student_helpers import tiny_student_flags

from dakter_hf.data.save import save_dataset
from dakter_hf.data.simulate import simulate_sar
from dakter_hf.errors import DataError, FolderError
from dakter_hf.generation.config import GenerationSettings
from dakter_hf.generation.dataset import generate_dataset
from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.joint.unet import make_joint_unet
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.students.checkpoints import checkpoint_problem, complete_checkpoints, rotate_checkpoints
from dakter_hf.students.train import main


DRIVER = os.path.join(os.path.dirname(__file__), "kill_driver.py")


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_data")
    save_dataset(simulate_sar(8, num_classes=2, size=32, seed=0, num_test_samples=4), str(root / "real"))
    return str(root / "real")


def common(real, steps=4):
    """A tiny SegFormer, 2 epochs of 2 steps, a checkpoint every step; augmentation and dropout on."""
    return [
        *tiny_student_flags(real),
        "--max_steps",
        str(steps),
        "--per_device_train_batch_size",
        "4",
        "--logging_steps",
        "1",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--save_total_limit",
        "2",
        "--seed",
        "5",
        "--data_seed",
        "5",
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
        "--report_to",
        "none",
    ]


def weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def assert_same_weights(a, b):
    a, b = weights(a), weights(b)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_killed_at_many_points_resumes_to_the_uninterrupted_weights(real, tmp_path):
    work = tmp_path / "work"
    plan = {"argv": common(real), "work": str(work), "keys": "all" if os.environ.get("DAKTER_ALL_KILL_POINTS") else ""}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [sys.executable, DRIVER, str(tmp_path / "plan.json"), str(tmp_path / "result.json")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    keys, chosen = result["keys"], result["chosen"]
    # the run's own file operations: the claim, 4 checkpoint saves (8 files, a rename, the staging folder,
    # the rotation) and the end (student, metrics, card, marker)
    assert len(keys) > 50 and sum("checkpoint-3.tmp/checkpoint-3/" in k for k in keys) == 8
    kills = [k for k in result["kills"] if k["code"] != 0]
    for kill in kills:  # every run was killed at its kill point
        assert kill["reached"] and kill["code"] == -9, kill
        if kill["resumed_from"] is not None:  # and had resumed from the newest checkpoint there was
            newest = kill["checkpoints_before"][-1] if kill["checkpoints_before"] else "none"
            assert kill["resumed_from"] == newest, kill
    points = {(k["key"], k["mode"]) for k in kills}
    assert len(points) == len(kills) == 2 * len(chosen) and len(chosen) >= (len(keys) if plan["keys"] else 20)
    assert any("optimizer.pt" in key and mode == "torn" for key, mode in points)  # cut mid-checkpoint
    assert ("train/rename:checkpoint-3#1", "torn") in points  # complete, not yet renamed
    assert ("train/rmtree:checkpoint-1#1", "torn") in points  # the rotation cut short
    assert ("train/write:.all_results.json.*.tmp#1", "torn") in points  # a file the next attempt reads back
    assert any(k["resumed_from"] not in (None, "none") for k in kills)
    # each chain of killed runs was finished by its last run, with the reference's exact weights
    assert result["kills"][-1]["code"] == 0 and len(result["chains"]) <= len(chosen)
    reference = result["reference"]
    for chain in result["chains"]:
        assert_same_weights(chain, reference)
        for step in (3, 4):
            assert_same_weights(
                os.path.join(chain, f"checkpoint-{step}"), os.path.join(reference, f"checkpoint-{step}")
            )
        left = [os.path.join(chain, n) for n in os.listdir(chain) if n.startswith("checkpoint-")]
        assert all(checkpoint_problem(path) is None for path in left), left  # complete; no staging left
        assert not [n for n in os.listdir(chain) if n.endswith(".tmp")]
        assert json.loads(open(os.path.join(chain, ".dakter.json")).read())["finished"] is True
    # the forked children behave as a plain `python training/train_student.py` run
    plain = tmp_path / "plain"
    command = [sys.executable, os.path.join(REPO_ROOT, "training", "train_student.py"), *common(real)]
    subprocess.run([*command, "--output_dir", str(plain)], check=True, env=env, cwd=REPO_ROOT, capture_output=True)
    assert_same_weights(plain, result["reference"])


def run(out, real, *extra, steps=2):
    return main([*common(real, steps), "--output_dir", str(out), *extra])


def interrupt(folder):
    """What a kill after the last checkpoint leaves: checkpoints, an unfinished marker, no student."""
    for name in ("model.safetensors", "test_metrics.json", "README.md"):
        os.remove(os.path.join(folder, name))
    marker = json.loads((folder / ".dakter.json").read_text())
    (folder / ".dakter.json").write_text(json.dumps({**marker, "finished": False}))


def test_a_used_output_dir_needs_resume_or_overwrite(real, tmp_path, one_thread, capsys):
    out = tmp_path / "out"
    run(out, real)
    interrupt(out)
    before = {n: os.path.getmtime(out / n / "trainer_state.json") for n in ("checkpoint-1", "checkpoint-2")}
    with pytest.raises(FolderError, match="--resume_from_checkpoint latest.*checkpoint-2.*--overwrite"):
        run(out, real)
    # refused: nothing restarted, no checkpoint rotated away or rewritten
    assert before == {n: os.path.getmtime(out / n / "trainer_state.json") for n in before}
    assert not (out / "model.safetensors").exists()
    run(out, real, "--resume_from_checkpoint", "latest")
    assert (out / "model.safetensors").exists()
    # finished: the same command says so at the default log level and changes nothing
    capsys.readouterr()
    saved = os.path.getmtime(out / "model.safetensors")
    run(out, real)
    assert "already holds this finished student" in capsys.readouterr().out
    assert os.path.getmtime(out / "model.safetensors") == saved
    # --overwrite starts again
    run(out, real, "--overwrite")
    assert os.path.getmtime(out / "model.safetensors") != saved


def test_a_resume_skips_an_incomplete_checkpoint(real, tmp_path, one_thread, caplog):
    whole = run(tmp_path / "whole", real, steps=3)
    out = tmp_path / "out"
    run(out, real, "--save_total_limit", "10", steps=3)
    interrupt(out)
    # checkpoint-3 as an older version left it when killed while writing it in place
    os.remove(out / "checkpoint-3" / "trainer_state.json")
    with open(out / "checkpoint-3" / "model.safetensors", "r+b") as handle:
        handle.truncate(100)
    assert checkpoint_problem(str(out / "checkpoint-3")) is not None
    with pytest.raises(FolderError, match="incomplete.*the newest complete one is .*checkpoint-2"):
        run(out, real, "--save_total_limit", "10", "--resume_from_checkpoint", str(out / "checkpoint-3"), steps=3)
    with caplog.at_level(logging.WARNING, logger="dakter_hf.students.checkpoints"):
        run(out, real, "--save_total_limit", "10", "--resume_from_checkpoint", "latest", steps=3)
    assert "skipping the incomplete checkpoint" in caplog.text and "checkpoint-3" in caplog.text
    assert checkpoint_problem(str(out / "checkpoint-3")) is None  # saved again, whole
    assert_same_weights(out, whole)


def test_rotation_counts_only_complete_checkpoints(tmp_path):
    def checkpoint(step, complete=True):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in ("config.json", "optimizer.pt", "scheduler.pt"):
            (folder / name).write_text("{}")
        (folder / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
        if complete:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))

    for step in (1, 2, 4):
        checkpoint(step)
    checkpoint(3, complete=False)  # a rotation cut short, or an older version's half-written save
    checkpoint(5, complete=False)
    (tmp_path / "checkpoint-6.tmp").mkdir()
    assert [os.path.basename(p) for p in complete_checkpoints(str(tmp_path))] == [
        "checkpoint-1",
        "checkpoint-2",
        "checkpoint-4",
    ]
    rotate_checkpoints(str(tmp_path), 2)
    # two complete ones stay; the incomplete one below the newest goes, the newer one and the staging stay
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2", "checkpoint-4", "checkpoint-5", "checkpoint-6.tmp"]


def generated_set(root, classes, label_loss="ce"):
    """A set written by `dakter generate` from a tiny untrained pipeline."""
    torch.manual_seed(0)
    pipe = DAKTerPipeline(
        unet=make_joint_unet(len(classes), "tiny", sample_size=16),
        scheduler=DAKTerObjective(len(classes), 0.4).sampling_scheduler(),
        balancing_factor=0.4,
        class_names=list(classes),
        label_loss=label_loss,
    )
    pipe.save_pretrained(str(root / "pipeline"))
    settings = GenerationSettings(num_samples=8, batch_size=8, num_inference_steps=1)
    generate_dataset(str(root / "pipeline"), str(root / "generated"), settings, device="cpu", show_progress=False)
    return str(root / "generated")


def test_a_run_refused_for_its_generated_data_writes_nothing(real, tmp_path, one_thread):
    three_classes = generated_set(tmp_path / "three", ["background", "oil", "ship"])
    hard_labels = generated_set(tmp_path / "l2", ["background", "oil"], label_loss="l2")  # no soft labels
    out = tmp_path / "out"
    with pytest.raises(DataError, match="classes"):
        run(out, real, "--mode", "hard", "--generated", three_classes, "--scale", "0.5")
    assert not out.exists()  # no marker, no folder: the corrected command is not blocked
    with pytest.raises(DataError, match="no soft_label column"):
        run(out, real, "--mode", "dakter", "--generated", hard_labels, "--scale", "0.5")
    assert not out.exists()
    run(out, real, "--mode", "hard", "--generated", hard_labels, "--scale", "0.5")
    assert (out / "model.safetensors").exists()


def test_two_processes_stage_checkpoints_and_share_a_refusal(real, tmp_path):
    """torchrun, 2 CPU processes (gloo): each process's RNG state lands in the staged checkpoint, and a
    refused rerun stops both with the main process's one-line message (no peer traceback)."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    with socket.socket() as free:  # a port of our own for the rendezvous
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    command += [os.path.join(REPO_ROOT, "training", "train_student.py"), *common(real, 2), "--output_dir", str(out)]
    first = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    names = sorted(os.listdir(out / "checkpoint-2"))
    assert {"rng_state_0.pth", "rng_state_1.pth", "optimizer.pt", "trainer_state.json"} <= set(names)
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    interrupt(out)
    refused = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert refused.stderr.count("train_student.py: error: --output_dir") == 2, refused.stderr[-2000:]
    assert "Connection closed" not in refused.stderr and not (out / "model.safetensors").exists()
