"""Joint-training arguments and --config values are checked before anything runs or is written."""

import pytest


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
    from dakter_hf.joint.arguments import parse_args

    with pytest.raises(ValueError, match=word):
        parse_args(argv + ["--output_dir", str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()


def test_config_values_are_not_silently_converted(tmp_path):
    from dakter_hf.joint.arguments import parse_args

    path = tmp_path / "c.yaml"
    path.write_text("resolution: 16.5\n")
    with pytest.raises(ValueError, match="resolution"):
        parse_args(["--config", str(path)])
    path.write_text("max_train_steps: true\n")
    with pytest.raises(ValueError, match="max_train_steps"):
        parse_args(["--config", str(path)])
