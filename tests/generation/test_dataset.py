"""Generated soft-label datasets (dakter_hf.generation.dataset, `dakter generate`, `dakter quality`).

The pipeline is an untrained `tiny` UNet at 16 px (built, not trained): the samples are
noise-like, but every property tested here (features, determinism across batch sizes and
processes, resume, cards, upload) does not depend on the weights.
"""

import fnmatch
import json
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml
from helpers import CountingPipe, accelerate_launch, assert_imports_none_of, assert_old_path_forwards, generate_cli

from dakter_hf.cli import main
from dakter_hf.generation.config import KL_TEMPERATURE, GenerationConfig, GenerationSettings
from dakter_hf.generation.dataset import generate_dataset
from dakter_hf.generation.hub import push_generated_dataset
from dakter_hf.generation.shards import parquet_files
from dakter_hf.joint.objective import DAKTerObjective
from dakter_hf.joint.unet import make_joint_unet
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.students.losses import KD_TEMPERATURE
from dakter_hf.utils import files


torch.set_num_threads(1)

B = 0.4
CLASSES = ["background", "oil"]
STEPS = 2
N = 6
SHARD = 2


# pipeline_dir (tests/conftest.py): an untrained tiny pipeline with b = B and class names CLASSES


RUN_OPTIONS = {"device", "overwrite", "show_progress", "pipe", "process_index", "num_processes"}


def gen(pipeline_dir, out, **kwargs):
    """generate_dataset with the module's defaults; `kwargs` are GenerationSettings fields or run options."""
    options = {"num_samples": N, "batch_size": 2, "shard_size": SHARD, "num_inference_steps": STEPS}
    run = {"device": "cpu", "show_progress": False}
    for key, value in kwargs.items():
        (run if key in RUN_OPTIONS else options)[key] = value
    return generate_dataset(pipeline_dir, str(out), GenerationSettings(**options), **run)


@pytest.fixture(scope="module")
def reference(pipeline_dir, tmp_path_factory):
    """N = 6 samples, 3 shards of 2, batch size 2, one process, licence cc-by-4.0."""
    out = tmp_path_factory.mktemp("gen") / "reference"
    assert gen(pipeline_dir, out, license="cc-by-4.0") == str(out)
    return out


def load_parquet(out, cache):
    return datasets.load_dataset(
        "parquet", data_files={"train": parquet_files(str(out))}, split="train", cache_dir=str(cache)
    )


def rows_of(dataset):
    """Columns as numpy arrays, rows ordered by index."""
    order = np.argsort(np.asarray(dataset["index"]))
    result = {
        "index": np.asarray(dataset["index"])[order],
        "seed": np.asarray(dataset["seed"])[order],
        "image": np.stack([np.asarray(dataset[int(i)]["image"]) for i in order]),
        "mask": np.stack([np.asarray(dataset[int(i)]["mask"]) for i in order]),
        "classes": [dataset[int(i)]["classes"] for i in order],
    }
    if "soft_label" in dataset.column_names:
        result["soft_label"] = np.stack([np.asarray(dataset[int(i)]["soft_label"], dtype=np.float16) for i in order])
    return result


def rows_at(out, cache):
    return rows_of(load_parquet(out, cache))


# Soft labels of the same seed differ by up to one float16 step (~1e-3) between batch sizes:
# the UNet's float32 convolutions round differently for different batch shapes. Images,
# masks, seeds and index order are exact.
SOFT_TOL = 2e-3


def assert_same_rows(a, b, soft_atol=SOFT_TOL):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["seed"], b["seed"])
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["mask"], b["mask"])
    assert a["classes"] == b["classes"]
    assert ("soft_label" in a) == ("soft_label" in b)
    if "soft_label" in a:
        if soft_atol:
            np.testing.assert_allclose(
                a["soft_label"].astype(np.float32), b["soft_label"].astype(np.float32), atol=soft_atol, rtol=soft_atol
            )
        else:
            np.testing.assert_array_equal(a["soft_label"], b["soft_label"])


def shard_files(out):
    return sorted(os.path.basename(p) for p in Path(out, "data").glob("*.parquet"))


# ----------------------------------------------------------------------- features
def test_features_and_both_loaders(reference, tmp_path):
    parquet = load_parquet(reference, tmp_path / "cache")
    features = parquet.features
    assert list(features) == ["image", "soft_label", "mask", "seed", "index", "classes"]
    assert isinstance(features["image"], datasets.Image)
    assert isinstance(features["mask"], datasets.Image)
    assert isinstance(features["soft_label"], datasets.Array3D)
    assert features["soft_label"].shape == (2, 16, 16) and features["soft_label"].dtype == "float16"
    assert features["seed"] == datasets.Value("int64") and features["index"] == datasets.Value("int64")
    assert features["classes"].feature.names == CLASSES
    assert len(parquet) == N

    # stored as float16 in Arrow/parquet (datasets' numpy formatter hands it back upcast to float32)
    assert "halffloat" in str(parquet.data.schema.field("soft_label").type.storage_type)
    row = parquet.with_format("numpy")[0]
    assert row["soft_label"].shape == (2, 16, 16)
    assert np.asarray(parquet[0]["image"]).shape == (16, 16)
    mask = np.asarray(parquet[0]["mask"])
    assert mask.max() < 2
    np.testing.assert_array_equal(mask, row["soft_label"].astype(np.float32).argmax(axis=0))
    assert sorted(parquet[0]["classes"]) == sorted(np.unique(mask).tolist())

    on_disk = datasets.load_from_disk(str(reference / "hf"))
    assert list(on_disk) == ["train"]
    assert on_disk["train"].features == features
    assert_same_rows(rows_of(parquet), rows_of(on_disk["train"]), soft_atol=0)
    rows = rows_of(parquet)
    assert rows["index"].tolist() == list(range(N)) and rows["seed"].tolist() == list(range(N))


def test_dataset_card_and_generation_config(reference):
    card = (reference / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n")
    meta = yaml.safe_load(card[4:].partition("\n---\n")[0])
    assert meta["license"] == "cc-by-4.0"
    assert "dakter" in meta["tags"]
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
    assert f"{B:.4f}" in card
    assert f"0 .. {N - 1}" in card

    config = json.loads((reference / "generation_config.json").read_text())
    assert config["num_samples"] == N and config["num_inference_steps"] == STEPS and config["balancing_factor"] == B
    assert config["class_names"] == CLASSES and config["shard_size"] == SHARD
    kl = config["soft_label_kl"]
    assert kl is not None and 0 <= kl["mean"] < 1e-4 and kl["max"] >= kl["mean"]
    assert not (reference / ".soft_label_kl").exists()
    assert shard_files(reference) == [f"train-{k:05d}-of-00003.parquet" for k in range(3)]
    assert not list(reference.rglob("*.tmp"))


# ------------------------------------------------------------------ determinism
def test_same_dataset_for_any_batch_size(pipeline_dir, reference, tmp_path):
    ones = gen(pipeline_dir, tmp_path / "bs1", batch_size=1, shard_size=N)
    threes = gen(pipeline_dir, tmp_path / "bs3", batch_size=3, shard_size=N, save_to_disk=False)
    a, b = rows_at(ones, tmp_path / "c1"), rows_at(threes, tmp_path / "c3")
    assert_same_rows(a, b)
    assert_same_rows(a, rows_at(reference, tmp_path / "c2"))  # batch 2, shards of 2
    assert not (Path(threes) / "hf").exists()


@pytest.mark.parametrize("first, second", [(0, 1), (1, 0)], ids=["0-then-1", "1-then-0"])
def test_same_dataset_for_one_and_two_processes(pipeline_dir, reference, tmp_path, first, second):
    out = tmp_path / "split"
    assert gen(pipeline_dir, out, process_index=first, num_processes=2) is None
    expected = {
        0: ["train-00000-of-00003.parquet", "train-00002-of-00003.parquet"],
        1: ["train-00001-of-00003.parquet"],
    }
    assert shard_files(out) == expected[first]
    assert not (out / "README.md").exists()
    assert gen(pipeline_dir, out, process_index=second, num_processes=2) == str(out)
    assert_same_rows(
        rows_at(out, tmp_path / "c"), rows_at(reference, tmp_path / "c0"), soft_atol=0
    )  # same batch size: bit-identical
    config = json.loads((out / "generation_config.json").read_text())
    assert config["soft_label_kl"] is not None
    assert (out / "README.md").exists() and (out / "hf").is_dir()


def test_accelerate_launch_two_processes_matches_one(pipeline_dir, reference, tmp_path):
    """The multi-process path: `accelerate launch --multi_gpu --num_processes 2` (gloo on a CPU) splits the shards."""
    import subprocess

    out = tmp_path / "launched"
    cli = ["-m", "dakter_hf.cli", "generate", "--pipeline", pipeline_dir, "--out", str(out)]
    flags = f"-n {N} --steps {STEPS} --shard-size {SHARD} --batch-size 2 --license cc-by-4.0"
    command = accelerate_launch("--multi_gpu", *cli, *flags.split(), processes=2)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # two processes really ran: one made shards 0 and 2, the other shard 1
    assert "generating (2 shards)" in done.stderr and "generating (1 shards)" in done.stderr, done.stderr[-3000:]
    assert_same_rows(rows_at(out, tmp_path / "c"), rows_at(reference, tmp_path / "c0"), soft_atol=0)
    assert (out / "README.md").exists()


# ------------------------------------------------------------------ kill / resume
def test_kill_and_resume(pipeline_dir, reference, tmp_path):
    out = tmp_path / "killed"
    pipe = DAKTerPipeline.from_pretrained(pipeline_dir)
    dying = CountingPipe(pipe, fail_on=3)  # batch size 1: shard 0 done, shard 1 half made
    with pytest.raises(KeyboardInterrupt):
        gen(pipeline_dir, out, batch_size=1, pipe=dying)
    assert shard_files(out) == ["train-00000-of-00003.parquet"]
    assert not (out / "README.md").exists()

    resumed = CountingPipe(pipe)
    assert gen(pipeline_dir, out, batch_size=1, pipe=resumed) == str(out)
    assert resumed.calls == 4, "finished shards must be skipped"
    assert_same_rows(rows_at(out, tmp_path / "c"), rows_at(reference, tmp_path / "c0"))
    assert json.loads((out / "generation_config.json").read_text())["soft_label_kl"] is not None

    again = CountingPipe(pipe)
    assert gen(pipeline_dir, out, batch_size=1, pipe=again) == str(out)
    assert again.calls == 0


def test_kill_while_writing_a_shard(pipeline_dir, reference, tmp_path, monkeypatch):
    """A shard whose parquet was written to .tmp but not renamed is not counted as done."""
    out = tmp_path / "killed_write"
    original_remove = files._remove
    monkeypatch.setattr(files, "_remove", lambda path: None)  # a hard kill runs no cleanup: the temporary stays
    original = datasets.Dataset.to_parquet
    written = []

    def dying_to_parquet(self, path, *args, **kwargs):
        result = original(self, path, *args, **kwargs)
        written.append(path)
        if len(written) == 2:
            raise KeyboardInterrupt("killed after writing " + str(path))
        return result

    monkeypatch.setattr(datasets.Dataset, "to_parquet", dying_to_parquet)
    with pytest.raises(KeyboardInterrupt):
        gen(pipeline_dir, out)
    monkeypatch.setattr(datasets.Dataset, "to_parquet", original)
    assert os.path.basename(written[-1]).startswith(".train-00001-of-00003.parquet.") and written[-1].endswith(".tmp")
    assert os.path.isfile(written[-1])
    monkeypatch.setattr(files, "_remove", original_remove)
    assert shard_files(out) == ["train-00000-of-00003.parquet"]

    counting = CountingPipe(DAKTerPipeline.from_pretrained(pipeline_dir))
    assert gen(pipeline_dir, out, pipe=counting) == str(out)
    assert counting.calls == 2  # shards 1 and 2, one batch of 2 each
    assert_same_rows(
        rows_at(out, tmp_path / "c"), rows_at(reference, tmp_path / "c0"), soft_atol=0
    )  # same batch size: bit-identical
    assert not list(out.rglob("*.tmp"))


def test_interrupted_shard_write_leaves_no_temporary(pipeline_dir, tmp_path, monkeypatch):
    """Ctrl-C (not a hard kill) while a shard is written: its temporary is removed at once."""
    out = tmp_path / "interrupted"
    original = datasets.Dataset.to_parquet

    def interrupted_to_parquet(self, path, *args, **kwargs):
        original(self, path, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.Dataset, "to_parquet", interrupted_to_parquet)
    with pytest.raises(KeyboardInterrupt):
        gen(pipeline_dir, out)
    assert os.listdir(out / "data") == [] and not list(out.rglob("*.tmp"))


def test_resume_with_other_settings_raises_and_overwrite_starts_fresh(pipeline_dir, reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    with pytest.raises(ValueError, match="num_inference_steps"):
        gen(pipeline_dir, out, num_inference_steps=STEPS + 1)
    with pytest.raises(ValueError, match="shard_size"):
        gen(pipeline_dir, out, shard_size=3)
    with pytest.raises(ValueError, match="base_seed"):
        gen(pipeline_dir, out, base_seed=7)
    assert gen(pipeline_dir, out, num_samples=2, num_inference_steps=STEPS + 1, overwrite=True) == str(out)
    config = json.loads((out / "generation_config.json").read_text())
    assert config["num_samples"] == 2 and config["num_inference_steps"] == STEPS + 1
    assert shard_files(out) == ["train-00000-of-00001.parquet"]
    assert len(load_parquet(out, tmp_path / "c")) == 2


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize("count", [0, -1])
def test_non_positive_sample_count_raises(pipeline_dir, tmp_path, count):
    with pytest.raises(ValueError, match="> 0"):
        gen(pipeline_dir, tmp_path / "x", num_samples=count)
    assert not (tmp_path / "x").exists()


def test_pipeline_without_model_index_raises(tmp_path):
    empty = tmp_path / "not_a_pipeline"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not_a_pipeline"):
        generate_dataset(str(empty), str(tmp_path / "x"), GenerationSettings(2), device="cpu", show_progress=False)


def test_relative_pipeline_folder_without_model_index(tmp_path, monkeypatch):
    (tmp_path / "mymodel").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="mymodel"):
        generate_dataset("mymodel", "out", GenerationSettings(num_samples=2), device="cpu", show_progress=False)


def test_class_count_mismatch_rejected_at_construction():
    with pytest.raises(ValueError, match="channels"):
        DAKTerPipeline(
            unet=make_joint_unet(5, "tiny", sample_size=16),  # 1 + 5 = 6 channels
            scheduler=DAKTerObjective(2, B).sampling_scheduler(),
            balancing_factor=B,
            class_names=CLASSES,
        )


def test_l2_pipeline_has_no_soft_label_column(tmp_path):
    names = ["sea", "oil", "look-alike", "ship", "land"]
    torch.manual_seed(0)
    pipe = DAKTerPipeline(
        unet=make_joint_unet(5, "tiny", sample_size=16, label_encoding="binary"),
        scheduler=DAKTerObjective(5, B, label_loss="l2", label_encoding="binary").sampling_scheduler(),
        balancing_factor=B,
        class_names=names,
        label_loss="l2",
        label_encoding="binary",
    )
    path = str(tmp_path / "l2pipe")
    pipe.save_pretrained(path)
    out = tmp_path / "l2out"
    assert gen(path, out, num_samples=3, save_to_disk=False) == str(out)
    data = load_parquet(out, tmp_path / "c")
    assert "soft_label" not in data.column_names and len(data) == 3
    assert data.features["classes"].feature.names == names
    assert max(np.asarray(m).max() for m in data["mask"]) < 5
    assert json.loads((out / "generation_config.json").read_text())["soft_label_kl"] is None
    assert "absent" in (out / "README.md").read_text()


# -------------------------------------------------------------------------- Hub
class FakeApi:
    """Records the calls and 'uploads' into a local folder, honouring ignore_patterns like the Hub client."""

    def __init__(self, remote):
        self.remote, self.calls = Path(remote), []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        root = Path(kwargs["folder_path"])
        ignore = kwargs.get("ignore_patterns") or []
        for path in root.rglob("*"):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and not any(fnmatch.fnmatch(relative, pattern) for pattern in ignore):
                (self.remote / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, self.remote / relative)


def test_push_generated_dataset(reference, tmp_path):
    api = FakeApi(tmp_path / "remote")
    assert push_generated_dataset(str(reference), "user/repo", api=api) == "user/repo"
    (name, create), (name2, upload) = api.calls
    assert name == "create_repo" and name2 == "upload_folder"
    assert create["repo_id"] == "user/repo" and create["repo_type"] == "dataset" and create["exist_ok"] is True
    assert upload["repo_type"] == "dataset" and upload["repo_id"] == "user/repo"
    assert upload["folder_path"] == str(reference)
    assert "hf/*" in upload["ignore_patterns"]

    remote = tmp_path / "remote"
    uploaded = sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file())
    assert "README.md" in uploaded and "generation_config.json" in uploaded
    assert [u for u in uploaded if u.startswith("data/")] == [f"data/train-{k:05d}-of-00003.parquet" for k in range(3)]
    assert not any(u.startswith("hf/") for u in uploaded)
    remote_rows = rows_of(
        datasets.load_dataset(
            "parquet", data_files=str(remote / "data" / "*.parquet"), split="train", cache_dir=str(tmp_path / "c")
        )
    )
    assert_same_rows(remote_rows, rows_at(reference, tmp_path / "c0"), soft_atol=0)


def test_push_incomplete_generation_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="card"):
        push_generated_dataset(str(tmp_path), "user/repo", api=FakeApi(tmp_path / "remote"))


# --------------------------------------------------------------------------- CLI
def test_cli_generate_and_quality(pipeline_dir, tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert main(["generate", "--pipeline", pipeline_dir, "--out", out, "-n", "4", "--steps", "2"]) == 0
    assert len(load_parquet(out, tmp_path / "c")) == 4
    assert "wrote 4 samples" in capsys.readouterr().out

    assert main(["quality", "--real", "simulate:8", "--generated", out]) == 0
    printed = capsys.readouterr().out
    assert "real" in printed and "generated" in printed
    with open(os.path.join(out, "quality.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    assert {"real", "generated", "distance"} <= set(report)
    assert report["num_generated"] == 4 and report["num_real"] == 8


def test_cli_generate_scale(pipeline_dir, tmp_path, capsys):
    out = str(tmp_path / "scaled")
    assert generate_cli(pipeline_dir, out, "--scale 0.5 --real simulate:8 --steps 2 --batch-size 4") == 0
    assert "N = 4" in capsys.readouterr().out
    assert len(load_parquet(out, tmp_path / "c")) == 4


@pytest.mark.parametrize(
    "extra, message",
    [(["-n", "0"], "> 0"), (["--scale", "0.5"], "--real"), (["--scale", "-1", "--real", "simulate:8"], "--scale")],
)
def test_cli_generate_bad_counts(pipeline_dir, tmp_path, capsys, extra, message):
    code = main(["generate", "--pipeline", pipeline_dir, "--out", str(tmp_path / "bad"), "--steps", "2", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert "dakter generate: error" in err and message in err


def test_cli_generate_missing_pipeline(tmp_path, capsys):
    missing = str(tmp_path / "no_pipeline")
    os.makedirs(missing)
    assert main(["generate", "--pipeline", missing, "--out", str(tmp_path / "o"), "-n", "2", "--steps", "2"]) == 2
    assert "no_pipeline" in capsys.readouterr().err


def test_generation_config_fields_match_dataclass(reference):
    config = json.loads((reference / "generation_config.json").read_text())
    config.pop("soft_label_kl")
    assert GenerationConfig(**config).num_shards == 3


def test_rerun_of_a_finished_generation_changes_nothing(pipeline_dir, tmp_path):
    out = tmp_path / "again"
    assert gen(pipeline_dir, out) == str(out)
    before = (out / "generation_config.json").read_text(), (out / "README.md").read_text()
    assert json.loads(before[0])["soft_label_kl"] is not None
    assert not (out / ".soft_label_kl").exists()
    assert gen(pipeline_dir, out) == str(out)
    assert ((out / "generation_config.json").read_text(), (out / "README.md").read_text()) == before


# ---------------------------------------------------------------- settings object
def test_kl_temperature_is_the_students_distillation_temperature(reference):
    """generation does not import students (siblings); its default T must stay the students' T."""
    assert KL_TEMPERATURE == KD_TEMPERATURE
    assert GenerationSettings(num_samples=1).kl_temperature == KD_TEMPERATURE
    recorded = json.loads((reference / "generation_config.json").read_text())
    assert recorded["soft_label_kl"]["temperature"] == KD_TEMPERATURE


def test_generation_config_records_the_same_fields_as_before(reference):
    """Run-only settings (batch size, save_to_disk, the check's T) stay out: folders made before still resume."""
    recorded = set(json.loads((reference / "generation_config.json").read_text()))
    assert recorded == {
        "generator",
        "num_samples",
        "base_seed",
        "num_inference_steps",
        "eta",
        "label_noise",
        "shard_size",
        "balancing_factor",
        "class_names",
        "resolution",
        "label_loss",
        "label_encoding",
        "image_prediction_type",
        "license",
        "scheduler",
        "dtype",
        "soft_label_kl",
    }


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_samples": 0}, "> 0"),
        ({"num_samples": 2, "batch_size": 0}, "--batch-size"),
        ({"num_samples": 2, "eta": 2.0}, "--eta"),
        ({"num_samples": 2, "label_noise": "x"}, "--label-noise"),
        ({"num_samples": 2, "kl_temperature": 0}, "kl_temperature"),
    ],
)
def test_settings_are_checked_on_construction(options, message):
    with pytest.raises(ValueError, match=message):
        GenerationSettings(**options)


def test_old_keyword_call_warns_and_makes_the_same_dataset(pipeline_dir, reference, tmp_path):
    out = tmp_path / "old"
    with pytest.warns(FutureWarning, match="GenerationSettings"):
        done = generate_dataset(
            pipeline_dir,
            str(out),
            num_samples=N,
            batch_size=2,
            shard_size=SHARD,
            num_inference_steps=STEPS,
            license="cc-by-4.0",
            device="cpu",
            show_progress=False,
        )
    assert done == str(out)
    assert_same_rows(rows_at(out, tmp_path / "c"), rows_at(reference, tmp_path / "c0"), soft_atol=0)
    assert (out / "generation_config.json").read_text() == (reference / "generation_config.json").read_text()


def test_old_positional_sample_count_warns(pipeline_dir, tmp_path):
    out = tmp_path / "positional"
    with pytest.warns(FutureWarning):
        done = generate_dataset(pipeline_dir, str(out), 2, num_inference_steps=STEPS, device="cpu")
    assert done == str(out)
    assert len(load_parquet(out, tmp_path / "c")) == 2


def test_bad_calls_raise_type_errors(pipeline_dir, tmp_path):
    with pytest.raises(TypeError, match="not both"):
        generate_dataset(pipeline_dir, str(tmp_path / "a"), GenerationSettings(num_samples=2), batch_size=2)
    with pytest.raises(TypeError, match="sample_count"):
        generate_dataset(pipeline_dir, str(tmp_path / "b"), sample_count=2)
    with pytest.raises(TypeError, match="needs settings"):
        generate_dataset(pipeline_dir, str(tmp_path / "c"))
    assert not any((tmp_path / name).exists() for name in "abc")


# ------------------------------------------------------------------------- layout
OLD_PUBLIC_NAMES = [
    "CONFIG_NAME",
    "DAKTER_CLASS_NAMES",
    "DATASET_CARD",
    "GenerationConfig",
    "check_generation_options",
    "check_pipeline_kind",
    "finalize_generated_dataset",
    "generate_dataset",
    "generated_features",
    "load_pipeline",
    "model_fingerprint",
    "parquet_files",
    "push_generated_dataset",
    "soft_label_kl",
    "write_dataset_card",
]


def test_old_module_path_forwards_every_public_name():
    from dakter_hf.generation import card, config, dataset, hub, loading, shards

    homes = (dataset, config, loading, shards, card, hub)
    assert_old_path_forwards(
        "dakter_hf.generate", "dakter_hf.generation", OLD_PUBLIC_NAMES + ["GenerationSettings"], homes
    )


def test_generation_imports_no_sibling_layer():
    """generation sits beside students, joint and evaluation: it imports none of them (nor anything above)."""
    import dakter_hf.generation as package

    assert_imports_none_of(package, ("students", "joint", "evaluation", "experiment", "space", "cli"))
