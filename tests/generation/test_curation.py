"""Generated-set curation, `dakter generate --match-real DATA [--over-generate FACTOR]` (generation/curation.py).

The rule is tested on synthetic fraction arrays (hand-computed cases, and a generator that under-produces oil);
the generation on the untrained tiny pipeline of tests/conftest.py at 16 px, whose masks hold 18-31 % oil
against 2-14 % in `simulate:16`: curation has a real gap to close.
"""

import json
import os

import datasets
import numpy as np
import pytest
import torch
from helpers import CountingPipe
from scipy.stats import ks_2samp

from dakter_hf.cli import main
from dakter_hf.data.arrays import mask_to_ids
from dakter_hf.data.sources import load_saved, load_source
from dakter_hf.errors import DataError, FolderError
from dakter_hf.generation.config import GenerationSettings
from dakter_hf.generation.curation import (
    CANDIDATES,
    CURATION_NAME,
    ks_distance,
    proportional_counts,
    select_matching,
    strata_edges,
    stratum_of,
)
from dakter_hf.generation.dataset import generate_dataset
from dakter_hf.pipelines.pipeline_dakter import DAKTerPipeline
from dakter_hf.students.data import load_generated
from dakter_hf.utils import files


torch.set_num_threads(1)

N, FACTOR, SHARD, STEPS = 4, 3, 3, 2
REAL = "simulate:16"


# --------------------------------------------------------------------------------------- the rule itself
def test_strata_and_targets_by_hand():
    # real: 2 without oil, 4 with oil; 2 bins of the positive fractions -> one edge at their median 0.25
    real = np.array([0.0, 0.0, 0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(strata_edges(real, bins=2), [0.25])
    np.testing.assert_array_equal(stratum_of([0.0, 0.05, 0.25, 0.26, 1.0], np.array([0.25])), [0, 1, 1, 2, 2])
    # N = 3 of 6 real images: 1 per stratum (2/6, 2/6, 2/6 of the real images)
    candidates = np.array([0.3, 0.0, 0.1, 0.0, 0.5, 0.2, 0.0])
    chosen = select_matching(candidates, real, 3, bins=2)
    assert chosen.real == [2, 2, 2] and chosen.targets == [1, 1, 1] and chosen.available == [3, 2, 2]
    np.testing.assert_array_equal(chosen.kept, [0, 1, 2])  # each stratum's first candidate in index order
    assert chosen.borrowed == [0, 0, 0]
    # N = 6: 2 per stratum, again the first ones in index order
    np.testing.assert_array_equal(select_matching(candidates, real, 6, bins=2).kept, [0, 1, 2, 3, 4, 5])


def test_a_short_stratum_takes_the_nearest_unused_candidates():
    real = np.array([0.0, 0.1, 0.2, 0.3, 0.4])  # strata: no oil | (0, 0.25] | (0.25, 1]
    candidates = np.array([0.9, 0.0, 0.0, 0.0, 0.8, 0.05, 0.0, 0.7])  # too few with little oil
    chosen = select_matching(candidates, real, 5, bins=2)
    assert chosen.targets == [1, 2, 2] and chosen.available == [4, 1, 3] and chosen.borrowed == [0, 1, 0]
    # stratum 0 keeps candidate 1, stratum 1 candidate 5, stratum 2 candidates 0 and 4; stratum 1's missing
    # slot goes to the unused candidate nearest to its real fractions [0.1, 0.2]: an empty one (distance 0.1,
    # lowest index 2) before 0.7 (distance 0.5)
    np.testing.assert_array_equal(chosen.kept, [0, 1, 2, 4, 5])


def test_proportional_counts_sum_to_the_total_and_spread_the_rounding():
    assert proportional_counts(np.array([1, 1, 1, 1]), 2).tolist() == [1, 0, 1, 0]  # not [1, 1, 0, 0]
    assert proportional_counts(np.array([5, 0, 5]), 7).tolist() == [4, 0, 3]
    rng = np.random.default_rng(0)
    for _ in range(50):
        shares = rng.integers(0, 9, size=rng.integers(1, 12))
        shares[0] += 1
        total = int(rng.integers(1, 200))
        counts = proportional_counts(shares, total)
        assert counts.sum() == total and (counts >= 0).all()
        np.testing.assert_array_less(np.abs(counts - total * shares / shares.sum()), 1.0 + 1e-9)


def test_ks_distance_is_scipys_two_sample_statistic():
    rng = np.random.default_rng(1)
    a, b = rng.random(37), rng.random(50) ** 2
    assert ks_distance(a, b) == pytest.approx(ks_2samp(a, b).statistic)
    assert ks_distance(a, a) == 0


def oil_like(rng, count, empty, mean):
    """Per-image oil fractions: a share `empty` of images without oil, the others Beta around `mean`."""
    fractions = rng.beta(2.0, 2.0 * (1 - mean) / mean, size=count)
    fractions[rng.random(count) < empty] = 0.0
    return fractions


@pytest.mark.parametrize("candidate_mean, real_mean", [(0.12, 0.20), (0.35, 0.20)], ids=["too-little", "too-much"])
def test_kept_oil_fraction_moves_towards_the_real_one(candidate_mean, real_mean):
    rng = np.random.default_rng(2)
    real = oil_like(rng, 400, empty=0.3, mean=real_mean)
    candidates = oil_like(rng, 900, empty=0.5, mean=candidate_mean)
    chosen = select_matching(candidates, real, 300)
    kept = candidates[chosen.kept]
    assert len(chosen.kept) == 300 and np.all(np.diff(chosen.kept) > 0)
    gap_before, gap_after = abs(candidates.mean() - real.mean()), abs(kept.mean() - real.mean())
    assert gap_after < 0.5 * gap_before, (candidates.mean(), kept.mean(), real.mean())
    assert ks_distance(kept, real) < 0.5 * ks_distance(candidates, real)
    # every stratum first keeps its own candidates, up to its target; the rest stands in from other strata
    own = np.bincount(stratum_of(kept, np.asarray(chosen.edges)), minlength=len(chosen.targets))
    np.testing.assert_array_less(np.minimum(chosen.targets, chosen.available) - 1, own)
    assert sum(chosen.borrowed) == sum(np.maximum(np.array(chosen.targets) - chosen.available, 0)) > 0


def test_selection_is_deterministic_and_depends_only_on_the_fractions():
    rng = np.random.default_rng(3)
    real, candidates = oil_like(rng, 50, 0.2, 0.2), oil_like(rng, 120, 0.5, 0.1)
    first, second = select_matching(candidates, real, 40), select_matching(candidates.copy(), real.copy(), 40)
    np.testing.assert_array_equal(first.kept, second.kept)
    assert (first.edges, first.targets, first.borrowed) == (second.edges, second.targets, second.borrowed)
    # the real images' order does not matter; the candidates' index order does (ties go to the lower index)
    np.testing.assert_array_equal(select_matching(candidates, real[::-1], 40).kept, first.kept)


@pytest.mark.parametrize("count", [0, 121])
def test_selection_refuses_impossible_counts(count):
    with pytest.raises(ValueError, match="cannot keep"):
        select_matching(np.zeros(120), np.zeros(5), count)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"over_generate": 0.5}, ">= 1"),
        ({"over_generate": float("inf")}, "finite"),
        ({"over_generate": True}, "number"),
        ({"over_generate": 1e308, "num_samples": 10}, "finite count"),
        ({"match_real": ""}, "--match-real"),
    ],
)
def test_curation_settings_are_checked_on_construction(options, message):
    with pytest.raises(ValueError, match=message):
        GenerationSettings(**{"num_samples": 2, **options})


def test_candidate_count():
    assert GenerationSettings(num_samples=4, match_real=REAL).num_candidates == 12
    assert GenerationSettings(num_samples=10, match_real=REAL, over_generate=1.5).num_candidates == 15
    assert GenerationSettings(num_samples=4, over_generate=5).num_candidates == 4  # no --match-real: no curation


# ------------------------------------------------------------------------------------ the generation
def curate(pipeline_dir, out, **kwargs):
    """generate_dataset with --match-real simulate:16 (its default loader), N = 4, factor 3, shards of 3."""
    run = {
        key: kwargs.pop(key)
        for key in ("pipe", "overwrite", "real_data", "process_index", "num_processes")
        if key in kwargs
    }
    options = {"num_samples": N, "batch_size": 2, "shard_size": SHARD, "num_inference_steps": STEPS}
    options.update({"match_real": REAL, "over_generate": FACTOR, **kwargs})
    return generate_dataset(
        pipeline_dir, str(out), GenerationSettings(**options), device="cpu", show_progress=False, **run
    )


def kept_rows(out):
    """index, seed, image and mask of the kept set, as the students read it (OUT/hf)."""
    data = load_generated(str(out))
    return {
        "index": np.asarray(data["index"]),
        "seed": np.asarray(data["seed"]),
        "image": np.stack([np.asarray(row["image"]) for row in data]),
        "mask": np.stack([np.asarray(row["mask"]) for row in data]),
    }


def oil_fractions(masks):
    return np.array([(mask_to_ids(mask) == 1).mean() for mask in masks])


@pytest.fixture(scope="module")
def curated(pipeline_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("curation") / "curated"
    assert curate(pipeline_dir, out) == str(out)
    return out


@pytest.fixture(scope="module")
def plain(pipeline_dir, tmp_path_factory):
    """The 12 candidates as a plain generation (same seeds, same settings)."""
    out = tmp_path_factory.mktemp("curation") / "plain"
    settings = GenerationSettings(num_samples=N * FACTOR, batch_size=2, shard_size=SHARD, num_inference_steps=STEPS)
    assert generate_dataset(pipeline_dir, str(out), settings, device="cpu", show_progress=False) == str(out)
    return out


def test_kept_rows_are_candidates_and_the_dataset_reads_like_any_generated_set(curated, plain):
    rows = kept_rows(curated)
    record = json.loads((curated / CURATION_NAME).read_text())
    assert len(rows["index"]) == N and rows["index"].tolist() == record["kept_indices"]
    assert rows["seed"].tolist() == record["kept_seeds"] == rows["index"].tolist()  # base seed 0
    everything = load_saved(str(plain))["train"]
    for position, index in enumerate(rows["index"]):
        np.testing.assert_array_equal(rows["image"][position], np.asarray(everything[int(index)]["image"]))
        np.testing.assert_array_equal(rows["mask"][position], np.asarray(everything[int(index)]["mask"]))
    # the parquet shards hold the same rows as OUT/hf, in shards of --shard-size; the candidates stay apart
    parquet = datasets.load_dataset("parquet", data_dir=str(curated / "data"), split="train")
    assert parquet["index"] == rows["index"].tolist() and parquet.features == load_generated(str(plain)).features
    assert sorted(os.listdir(curated / "data")) == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert len(os.listdir(curated / CANDIDATES / "data")) == 4  # 12 candidates in shards of 3
    assert not list(curated.rglob("*.tmp"))


def test_kept_set_oil_fraction_moves_towards_the_real_one(curated, plain):
    """Measured on the masks themselves, not taken from the record."""
    real = oil_fractions(load_source(REAL, split="train")["train"]["mask"])
    candidates = oil_fractions(load_saved(str(plain))["train"]["mask"])
    kept = oil_fractions(kept_rows(curated)["mask"])
    assert abs(kept.mean() - real.mean()) < abs(candidates.mean() - real.mean()), (candidates, kept, real.mean())
    assert set(np.round(kept, 8)) == set(np.round(np.sort(candidates)[:N], 8))  # all above the real: the N lowest
    record = json.loads((curated / CURATION_NAME).read_text())["oil_fraction"]
    assert record["candidates"]["mean"] == pytest.approx(candidates.mean())
    assert record["kept"]["mean"] == pytest.approx(kept.mean())
    assert record["real"]["mean"] == pytest.approx(real.mean())


def test_card_and_records_name_what_was_kept_and_why(curated):
    card = (curated / "README.md").read_text(encoding="utf-8")
    record = json.loads((curated / CURATION_NAME).read_text())
    fractions = record["oil_fraction"]
    assert "## Curation (`--match-real`)" in card
    assert f"{N} samples kept of {N * FACTOR} candidates (3 x N)" in card and f"`{REAL}`" in card
    assert record["rule"] in card and record["real_fingerprint"] in card
    for part in ("candidates", "kept", "real"):
        assert f"{fractions[part]['mean']:.2%}" in card
    assert "curation.json" in card and "(0 .. 11)" in card  # the candidates' seeds
    assert record["num_candidates"] == N * FACTOR and record["num_kept"] == N and record["over_generate"] == FACTOR
    assert sum(stratum["target"] for stratum in record["strata"]) == N

    config = json.loads((curated / "generation_config.json").read_text())
    assert config["num_samples"] == N and config["over_generate"] == FACTOR
    assert config["match_real_fingerprint"] == record["real_fingerprint"]
    candidates = json.loads((curated / CANDIDATES / "generation_config.json").read_text())
    assert candidates["num_samples"] == N * FACTOR
    assert "over_generate" not in candidates and "match_real_fingerprint" not in candidates
    assert not (curated / CANDIDATES / "README.md").exists()  # not a finished set to train on


def test_plain_generation_records_no_curation_fields(plain):
    config = json.loads((plain / "generation_config.json").read_text())
    assert "over_generate" not in config and "match_real_fingerprint" not in config
    assert "Curation" not in (plain / "README.md").read_text(encoding="utf-8")


def test_same_kept_set_for_any_batch_size(pipeline_dir, curated, tmp_path):
    out = tmp_path / "batch3"
    assert curate(pipeline_dir, out, batch_size=3) == str(out)
    a, b = kept_rows(out), kept_rows(curated)
    for key in ("index", "seed", "image", "mask"):
        np.testing.assert_array_equal(a[key], b[key])
    assert (out / CURATION_NAME).read_text() == (curated / CURATION_NAME).read_text()


def test_same_kept_set_when_two_processes_share_the_candidates(pipeline_dir, curated, tmp_path):
    out = tmp_path / "split"
    assert curate(pipeline_dir, out, process_index=1, num_processes=2) is None  # candidate shards 1 and 3
    assert sorted(os.listdir(out / CANDIDATES / "data")) == [
        "train-00001-of-00004.parquet",
        "train-00003-of-00004.parquet",
    ]
    assert not os.listdir(out / "data") and not (out / "README.md").exists()
    assert curate(pipeline_dir, out, process_index=0, num_processes=2) == str(out)  # the last one keeps
    assert (out / CURATION_NAME).read_text() == (curated / CURATION_NAME).read_text()
    assert kept_rows(out)["index"].tolist() == kept_rows(curated)["index"].tolist()


def test_resume_after_an_interrupted_over_generation(pipeline_dir, curated, tmp_path):
    out = tmp_path / "killed"
    pipe = DAKTerPipeline.from_pretrained(pipeline_dir)
    with pytest.raises(KeyboardInterrupt):  # batch size 1: candidate shards 0 and 1 done, shard 2 half made
        curate(pipeline_dir, out, batch_size=1, pipe=CountingPipe(pipe, fail_on=8))
    assert len(os.listdir(out / CANDIDATES / "data")) == 2
    assert not (out / "README.md").exists() and not os.listdir(out / "data")
    resumed = CountingPipe(pipe)
    assert curate(pipeline_dir, out, batch_size=1, pipe=resumed) == str(out)
    assert resumed.calls == 6, "finished candidate shards must be skipped"
    assert kept_rows(out)["index"].tolist() == kept_rows(curated)["index"].tolist()
    assert (out / CURATION_NAME).read_text() == (curated / CURATION_NAME).read_text()
    again = CountingPipe(pipe)
    assert curate(pipeline_dir, out, pipe=again) == str(out) and again.calls == 0  # finished: nothing to do


def test_resume_after_a_kill_while_writing_the_kept_set(pipeline_dir, curated, tmp_path, monkeypatch):
    out = tmp_path / "killed_keeping"
    original, written = datasets.Dataset.to_parquet, []
    monkeypatch.setattr(files, "_remove", lambda path: None)  # a hard kill runs no cleanup: the temporary stays

    def dying_to_parquet(self, path, *args, **kwargs):
        result = original(self, path, *args, **kwargs)
        written.append(path)
        if len(written) == 6:  # 4 candidate shards, then kept shard 0, then the kill while kept shard 1 is written
            raise KeyboardInterrupt("killed")
        return result

    monkeypatch.setattr(datasets.Dataset, "to_parquet", dying_to_parquet)
    with pytest.raises(KeyboardInterrupt):
        curate(pipeline_dir, out)
    monkeypatch.undo()
    finished = [name for name in os.listdir(out / "data") if name.endswith(".parquet")]
    assert finished == ["train-00000-of-00002.parquet"] and list((out / "data").glob(".train-00001-*.tmp"))
    assert not (out / "README.md").exists() and not (out / CURATION_NAME).exists()
    counting = CountingPipe(DAKTerPipeline.from_pretrained(pipeline_dir))
    assert curate(pipeline_dir, out, pipe=counting) == str(out) and counting.calls == 0
    a, b = kept_rows(out), kept_rows(curated)
    for key in ("index", "image", "mask"):
        np.testing.assert_array_equal(a[key], b[key])
    assert (out / "README.md").read_text() == (curated / "README.md").read_text()
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize(
    "change, message",
    [({"over_generate": 2}, "over_generate"), ({"match_real": "simulate:20"}, "match_real_fingerprint")],
    ids=["factor", "real-set"],
)
def test_rerun_with_another_factor_or_real_set_is_refused(pipeline_dir, tmp_path, change, message):
    out = tmp_path / "refused"
    assert curate(pipeline_dir, out, num_samples=2, shard_size=6) == str(out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(FolderError, match=message):
        curate(pipeline_dir, out, num_samples=2, shard_size=6, **change)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert curate(pipeline_dir, out, num_samples=2, shard_size=6, overwrite=True, **change) == str(out)


def test_a_real_set_with_other_classes_is_refused(pipeline_dir, tmp_path):
    five = load_source("simulate:4", num_classes=5, split="train")["train"]
    with pytest.raises(DataError, match="--match-real .* has the classes"):
        curate(pipeline_dir, tmp_path / "five", real_data=five)
    assert not (tmp_path / "five").exists()


# ------------------------------------------------------------------------------------------------ CLI
def generate(pipeline_dir, out, *extra):
    flags = ["-n", "2", "--steps", "2", "--batch-size", "2", "--shard-size", "2", "--device", "cpu"]
    return main(["generate", "--pipeline", pipeline_dir, "--out", str(out), *flags, *extra])


def test_cli_match_real_from_a_dakter_data_folder(pipeline_dir, tmp_path, capsys):
    real = tmp_path / "real"
    assert main(["data", "--source", "simulate:12", "--out", str(real)]) == 0
    out = tmp_path / "curated"
    assert generate(pipeline_dir, out, "--match-real", str(real), "--over-generate", "2") == 0
    printed = capsys.readouterr().out
    assert "4 candidates for N = 2" in printed and "kept 2 of 4 candidates" in printed
    record = json.loads((out / CURATION_NAME).read_text())
    assert record["match_real"] == str(real) and record["real_images"] == 12
    # DATA is an input, as --real is: --out may not lie inside it
    assert generate(pipeline_dir, real / "inside", "--match-real", str(real)) == 2
    err = capsys.readouterr().err
    assert "overlaps the input" in err and not (real / "inside").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--match-real", "{tmp}/missing"], "--match-real {tmp}/missing: no such file or folder"),
        (["--match-real", "{tmp}"], "--match-real {tmp}: no saved dataset here"),
        (["--match-real", "simulate:x"], "--match-real simulate:x: simulate:N[,M] needs"),
        (["--over-generate", "2"], "--over-generate needs --match-real"),
        (["--match-real", "simulate:8", "--over-generate", "0.5"], "--over-generate must be a finite number >= 1"),
    ],
    ids=["missing", "not-a-dataset", "bad-spec", "factor-alone", "factor-below-one"],
)
def test_cli_bad_match_real_is_one_line_naming_the_flag(pipeline_dir, tmp_path, capsys, extra, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    extra = [part.format(tmp=empty) for part in extra]
    assert generate(pipeline_dir, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dakter generate: error: ") and "\n" not in err, err
    assert message.format(tmp=empty) in err
    assert not (tmp_path / "out").exists()


def test_cli_generated_set_as_match_real_is_refused(pipeline_dir, curated, tmp_path, capsys):
    assert generate(pipeline_dir, tmp_path / "out", "--match-real", str(curated)) == 2
    err = capsys.readouterr().err
    assert f"--match-real {curated} is a `dakter generate` folder (generated data)" in err
    assert not (tmp_path / "out").exists()
