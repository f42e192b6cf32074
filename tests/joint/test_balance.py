"""The --balancing_factor spellings resolved into one Balance (dakter_hf.joint.balance), and the old module path."""

import warnings
from types import SimpleNamespace

import pytest

from dakter_hf.data.balance import compute_balance_stats
from dakter_hf.data.sources import load_source
from dakter_hf.experiment.config import effective_joint_setting
from dakter_hf.joint.arguments import JointTrainingArguments
from dakter_hf.joint.balance import (
    Balance,
    balance_arguments,
    balance_resolution_of,
    balancing_choice,
    resolve_balancing_factor,
)


@pytest.fixture(scope="module")
def split():
    return load_source("simulate:8", num_classes=2, size=16, seed=0)["train"]


def args(**changes):
    return JointTrainingArguments(**{"resolution": 16, "report_to": "none", **changes})


@pytest.mark.parametrize(
    "spelling, init_from, expected",
    [
        ("default", None, "auto"),
        ("DEFAULT", "stage1", "inherit"),
        ("Auto", None, "auto"),
        ("none", "x", "none"),
        ("0.5", None, "0.5"),
    ],
)
def test_default_means_inherit_with_init_from_else_auto_in_training_and_in_the_experiment_plan(
    spelling, init_from, expected
):
    assert balancing_choice(spelling, init_from) == expected
    joint = {"balancing_factor": spelling, **({"init_from": init_from} if init_from else {})}
    assert effective_joint_setting(joint, "balancing_factor") == expected  # the experiment file reads it the same way


def test_experiment_default_b_is_the_training_default():
    assert effective_joint_setting({}, "balancing_factor") == "auto"
    assert effective_joint_setting({"init_from": "stage1/pipeline"}, "balancing_factor") == "inherit"


def test_auto_is_the_snr_value_at_the_balance_resolution(split):
    expected = compute_balance_stats(split, resolution=16)
    balance = resolve_balancing_factor(args(), split, None, show_progress=False)
    assert balance.b == pytest.approx(expected.b, rel=1e-12) and balance.resolution == 16
    assert "SNR value on 8 training images at 16 px" == balance.how
    native = resolve_balancing_factor(args(balance_resolution="native"), split, None, show_progress=False)
    assert native.resolution is None and "native size" in native.how


def test_none_and_a_bare_number():
    assert resolve_balancing_factor(args(balancing_factor="none"), None, None) == Balance(1.0, "none (b = 1)", None)
    assert resolve_balancing_factor(args(balancing_factor="0.25"), None, None) == Balance(0.25, "given", None)


def test_a_number_with_its_resolution_is_recorded_with_it():
    balance = resolve_balancing_factor(args(balancing_factor="0.3", balance_resolution="48"), None, None)
    assert balance == Balance(0.3, "given, computed at 48 px", 48)


@pytest.mark.parametrize("b, resolution", [(0.4412345678901234, 16), (1 / 3, None), (2.0, 128)])
def test_balance_arguments_give_the_same_b_and_resolution_back_exactly(b, resolution):
    balance = resolve_balancing_factor(args(**balance_arguments(b, resolution)), None, None)
    assert balance.b == b and balance.resolution == resolution


def test_inherit_takes_b_and_resolution_of_the_init_pipeline():
    init = SimpleNamespace(config=SimpleNamespace(balancing_factor=0.7, balance_resolution=64))
    for spelling in ("inherit", "default"):
        balance = resolve_balancing_factor(args(balancing_factor=spelling, init_from="s1"), None, init)
        assert balance == Balance(0.7, "inherited from s1", 64)
    with pytest.raises(ValueError, match="needs --init_from"):
        resolve_balancing_factor(args(balancing_factor="inherit"), None, None)


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_bad_spellings_are_refused(value):
    with pytest.raises(ValueError, match="balancing_factor"):
        resolve_balancing_factor(args(balancing_factor=value), None, None)


def test_balance_resolution_in_pixels():
    assert balance_resolution_of("train", 32) == 32
    assert balance_resolution_of("native", 32) is None and balance_resolution_of(None, 32) is None
    assert balance_resolution_of("48", 32) == 48


OLD_PUBLIC_NAMES = [
    "JointTrainingArguments",
    "load_config_file",
    "parse_args",
    "epoch_permutation",
    "BatchPlan",
    "step_generator",
    "ResizedPairs",
    "micro_batches",
    "balance_resolution_of",
    "resolve_balancing_factor",
    "sorted_checkpoints",
    "build_pipeline",
    "check_init_options",
    "unet_downsampling",
    "train",
    "RUN_CONTROL",
]


def test_old_module_path_still_gives_every_public_name():
    import importlib

    from dakter_hf.joint import arguments, balance, batching, checkpoints, training

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        old = importlib.import_module("dakter_hf.train_joint")
    homes = (training, arguments, batching, balance, checkpoints)
    for name in OLD_PUBLIC_NAMES:
        assert getattr(old, name) is next(getattr(m, name) for m in homes if hasattr(m, name)), name
