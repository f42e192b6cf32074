"""Tiny experiment files for the `dakter experiment` tests (tests/experiment/*)."""

import yaml


TINY_STUDENT = '{"hidden_sizes": [8, 16, 16, 16], "decoder_hidden_size": 16, "depths": [1, 1, 1, 1]}'


def tiny_config(tmp_path, name="tiny.yaml", arms=("real", "dakter-kd"), joint_changes=None, **changes):
    """A tiny experiment file; `joint_changes` are merged into its joint settings, `changes` replace top-level keys."""
    config = {
        "name": "tiny",
        "data": {"source": "simulate:12,6", "num_classes": 2, "size": 32, "seed": 0},
        "joint": {
            "resolution": 32,
            "unet_preset": "tiny",
            "image_prediction": "sample",
            "zero_terminal_snr": False,
            "train_batch_size": 4,
            "learning_rate": 1e-3,
            "max_train_steps": 4,
            "checkpointing_steps": 2,
            "logging_steps": 1,
        },
        "generation": {"steps": 2, "batch_size": 4},
        "students": [
            {
                "student": "segformer-b0",
                "resolution": 32,
                "student_config": TINY_STUDENT,
                "per_device_train_batch_size": 4,
                "max_steps": 2,
                "logging_steps": 1,
                "save_steps": 2,
            }
        ],
        "seeds": [0, 1],
        "arms": list(arms),
        "output_dir": str(tmp_path / "run"),
        "report_dir": str(tmp_path / "report"),
    }
    config["joint"].update(joint_changes or {})
    config.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)
