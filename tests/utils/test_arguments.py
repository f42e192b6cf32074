"""utils.arguments: one HfArgumentParser for several dataclasses, `--config FILE`, None-aware Optional flags."""

import json
from dataclasses import dataclass, field
from typing import List, Optional

import pytest
from transformers import TrainingArguments

from dakter_hf.utils.arguments import load_config_values, parse_arguments


@dataclass
class ToyArguments:
    data: str = field(default="simulate:16", metadata={"help": "dataset"})
    resolution: int = 64
    temperature: float = 1.0
    teacher: Optional[str] = None
    max_minutes: Optional[float] = 30.0
    keep: Optional[int] = 3
    augment: bool = True
    tags: List[str] = field(default_factory=lambda: ["a"])


# TrainingArguments stays cheap and offline: no reporting integrations, no accelerator
CHEAP = ["--output_dir", "unused-output", "--report_to", "none", "--use_cpu", "true"]
TYPES = (ToyArguments, TrainingArguments)


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_yaml_keys_go_to_their_dataclass_and_the_command_line_wins(tmp_path):
    path = write(
        tmp_path,
        "resolution: 32\ntemperature: 2\nteacher: runs/teacher\naugment: false\ntags: [x, y]\n"
        "learning_rate: 1e-4\nper_device_train_batch_size: 8\nnum_train_epochs: 2\nseed: 7\n",
    )
    toy, training = parse_arguments(TYPES, ["--config", path, *CHEAP, "--resolution", "48", "--seed", "9"])
    assert isinstance(toy, ToyArguments) and isinstance(training, TrainingArguments)
    assert toy.resolution == 48  # command line beats the file
    assert training.seed == 9
    assert toy.temperature == 2.0 and isinstance(toy.temperature, float)  # a YAML int for a float field
    assert toy.teacher == "runs/teacher" and toy.augment is False and toy.tags == ["x", "y"]
    assert toy.data == "simulate:16" and toy.keep == 3  # untouched defaults
    # YAML 1.1 reads `1e-4` as a string: converted like the flag would
    assert isinstance(training.learning_rate, float) and training.learning_rate == pytest.approx(1e-4)
    assert training.per_device_train_batch_size == 8 and isinstance(training.per_device_train_batch_size, int)
    assert training.num_train_epochs == 2.0 and isinstance(training.num_train_epochs, float)
    assert training.output_dir == "unused-output" and training.report_to == []
    assert not hasattr(toy, "learning_rate")


def test_json_config_and_bool_flags(tmp_path):
    path = write(tmp_path, json.dumps({"augment": False, "max_steps": 5, "weight_decay": 0}), "config.json")
    toy, training = parse_arguments(TYPES, ["--config", path, *CHEAP])
    assert (
        toy.augment is False
        and training.max_steps == 5
        and training.weight_decay == 0.0
        and isinstance(training.weight_decay, float)
    )
    toy, _ = parse_arguments(TYPES, ["--config", path, *CHEAP, "--augment"])
    assert toy.augment is True  # bare flag
    toy, _ = parse_arguments(TYPES, [*CHEAP, "--no_augment"])
    assert toy.augment is False  # complement of a default-True bool


@pytest.mark.parametrize("word", ["none", "None", "null", ""])
def test_optional_fields_read_none_words_as_none(tmp_path, word):
    toy, training = parse_arguments(
        TYPES, [*CHEAP, "--max_minutes", word, "--keep", word, "--teacher", word, "--save_total_limit", word]
    )
    assert toy.max_minutes is None and toy.keep is None and toy.teacher is None and training.save_total_limit is None
    path = write(tmp_path, f"max_minutes: '{word}'\nkeep: null\nsave_total_limit: {word or '~'}\n")
    toy, training = parse_arguments(TYPES, ["--config", path, *CHEAP])
    assert toy.max_minutes is None and toy.keep is None and training.save_total_limit is None
    toy, _ = parse_arguments(TYPES, ["--config", path, *CHEAP, "--keep", "2"])
    assert toy.keep == 2


def test_a_field_whose_default_is_the_word_none_keeps_it():
    # TrainingArguments.report_to defaults to "none"; report_to=None would become [None]
    _, training = parse_arguments(TYPES, ["--output_dir", "o", "--use_cpu", "true", "--report_to", "none"])
    assert training.report_to == []


def test_unknown_config_key_names_it(tmp_path):
    path = write(tmp_path, "resolution: 16\nlearning_rat: 0.001\n")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['learning_rat'\]") as error:
        parse_arguments(TYPES, ["--config", path, *CHEAP])
    assert path in str(error.value)


@pytest.mark.parametrize(
    "text, key",
    [
        ("resolution: abc\n", "resolution"),
        ("per_device_train_batch_size: 2.5\n", "per_device_train_batch_size"),
        ("learning_rate: fast\n", "learning_rate"),
        ("augment: maybe\n", "augment"),
        ("resolution: true\n", "resolution"),
        ("resolution: null\n", "resolution"),
        ("lr_scheduler_type: sideways\n", "lr_scheduler_type"),
    ],
)
def test_config_value_of_wrong_type_names_file_and_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=key) as error:
        parse_arguments(TYPES, ["--config", path, *CHEAP])
    assert path in str(error.value)


def test_config_must_be_a_mapping_and_exist(tmp_path):
    with pytest.raises(ValueError, match="mapping"):
        parse_arguments(TYPES, ["--config", write(tmp_path, "- 1\n- 2\n"), *CHEAP])
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        parse_arguments(TYPES, ["--config", str(tmp_path / "absent.yaml"), *CHEAP])


def test_bad_command_line_values_and_unknown_flags():
    with pytest.raises(SystemExit):
        parse_arguments(TYPES, [*CHEAP, "--resolution", "abc"])
    with pytest.raises(ValueError, match="--resolutio"):
        parse_arguments(TYPES, [*CHEAP, "--resolutio", "32"])  # no abbreviations


def test_load_config_values_returns_typed_values_of_the_file_keys_only(tmp_path):
    path = write(tmp_path, "resolution: 32\ntemperature: 1e-1\nkeep: none\n")
    assert load_config_values(path, (ToyArguments,)) == {"resolution": 32, "temperature": 0.1, "keep": None}
    values = load_config_values(path, (ToyArguments,))
    assert isinstance(values["temperature"], float)
    assert ToyArguments(**values).resolution == 32
