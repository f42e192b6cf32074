"""The teacher-KD baseline (paper, Table 2): soft labels of a trained student on the real images.

The teacher runs at its own input size (it may differ from the student's; the data module
resizes the logits). Its logits are computed once and cached as a dataset beside the
student (`soft_label` float16 (C, R, R) and the image `id`), with a record of which teacher
weights, data and size made them; a cache from anything else is recomputed.
"""

from __future__ import annotations

import os
import shutil

import datasets
import numpy as np

from dakter_hf.data.features import class_names_of
from dakter_hf.students.inference import predict_split
from dakter_hf.students.models import load_student, student_resolution
from dakter_hf.utils.files import atomic_write_json, read_json, replace_folder
from dakter_hf.utils.ownership import dataset_fingerprint, folder_fingerprint


RECORD = "teacher.json"


def teacher_soft_labels(
    teacher_dir: str, split, cache_dir: str, batch_size: int = 16, write: bool = True
) -> np.ndarray:
    """(N, C, R, R) float16 teacher logits for the rows of `split` (R: the teacher's size), cached.

    `write=False` (processes other than the main one) reads the cache and never writes it.
    """

    model, processor = load_student(teacher_dir)
    resolution = student_resolution(model, processor)
    record = {
        "teacher": os.path.abspath(teacher_dir),
        "weights": folder_fingerprint(teacher_dir),
        "data": dataset_fingerprint(split),
        "resolution": resolution,
    }
    record_path = os.path.join(cache_dir, RECORD)
    if read_json(record_path) == record:
        cached = datasets.load_from_disk(os.path.join(cache_dir, "hf")).with_format("numpy")
        return np.stack(cached["soft_label"]).astype(np.float16)
    names = class_names_of(split)
    if model.config.num_labels != len(names):
        raise ValueError(
            f"--teacher {teacher_dir} predicts {model.config.num_labels} classes; the real data has {len(names)} "
            f"({names})"
        )
    logits = np.concatenate(
        [batch.cpu().numpy().astype(np.float16) for batch, _ in predict_split(model, split, resolution, batch_size)]
    )
    if write:
        features = datasets.Features(
            {"id": datasets.Value("string"), "soft_label": datasets.Array3D(shape=logits.shape[1:], dtype="float16")}
        )
        ids = split["id"] if "id" in split.column_names else [str(i) for i in range(len(split))]
        staging = cache_dir + ".tmp"
        shutil.rmtree(staging, ignore_errors=True)
        datasets.Dataset.from_dict({"id": ids, "soft_label": list(logits)}, features=features).save_to_disk(
            os.path.join(staging, "hf")
        )
        atomic_write_json(os.path.join(staging, RECORD), record)
        replace_folder(staging, cache_dir)
    return logits
