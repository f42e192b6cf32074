"""Every student of the factory (CBD-Net included) and its loss options are accepted by an experiment file."""

import pytest
import yaml

from dakter_hf.experiment.config import load_experiment_config, split_student_settings
from dakter_hf.students.models import STUDENT_NAMES
from dakter_hf.students.train import StudentArguments


def write(tmp_path, students):
    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "s",
                "data": {"source": "simulate:8,4"},
                "students": students,
                "arms": ["real"],
                "output_dir": str(tmp_path / "run"),
            }
        )
    )
    return str(path)


def test_cbdnet_is_a_student_of_dakter_experiment_with_its_boundary_term(tmp_path):
    assert "cbdnet-resnet34" in STUDENT_NAMES
    config = load_experiment_config(
        write(
            tmp_path,
            [{"student": "cbdnet-resnet34", "resolution": 32}, {"student": "segformer-b0", "boundary_weight": 0.5}],
        )
    )
    cbdnet, segformer = (StudentArguments(**split_student_settings(s)[0], mode="real") for s in config.students)
    assert cbdnet.loss_config().boundary_weight == 1.0 and segformer.loss_config().boundary_weight == 0.5
    with pytest.raises(ValueError, match="boundary_weight"):
        load_experiment_config(write(tmp_path, [{"student": "cbdnet-resnet34", "boundary_weight": -1}]))
