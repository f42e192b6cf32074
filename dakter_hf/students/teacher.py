"""The teacher-KD baseline (paper, Table 2): soft labels of a trained student on the real images.

The teacher's logits are computed once and cached as a dataset beside the student
(`soft_label` float16 (C, R, R) and the image `id`), with a record of which teacher,
data and resolution made them; a cache from anything else is recomputed.
"""

from __future__ import annotations

import json
import os

import datasets
import numpy as np
import torch

from ..data.io import atomic_write_json, replace_folder

RECORD = "teacher.json"


def teacher_soft_labels(teacher_dir: str, split, resolution: int, cache_dir: str, batch_size: int = 16) -> np.ndarray:
    """(N, C, R, R) float16 teacher logits for the rows of `split`, from the cache when it matches."""
    from .data import build_eval_samples, student_collate
    from .inference import student_predictor
    from .models import load_student

    record = {"teacher": os.path.abspath(teacher_dir), "num_images": len(split), "resolution": int(resolution), "fingerprint": split._fingerprint}
    record_path = os.path.join(cache_dir, RECORD)
    if os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as handle:
            if json.load(handle) == record:
                return np.stack(datasets.load_from_disk(os.path.join(cache_dir, "hf")).with_format("numpy")["soft_label"]).astype(np.float16)

    model, _ = load_student(teacher_dir)
    if model.config.num_labels != len(split.features["classes"].feature.names):
        raise ValueError(f"--teacher {teacher_dir} predicts {model.config.num_labels} classes; the real data has {len(split.features['classes'].feature.names)}")
    predict = student_predictor(model)
    samples = build_eval_samples(split, resolution)
    samples.masks = samples.masks  # images are at `resolution`; logits come at the image size
    logits = []
    for batch in torch.utils.data.DataLoader(samples, batch_size=batch_size, collate_fn=student_collate):
        logits.append(predict(batch["pixel_values"]).cpu().numpy().astype(np.float16))
    logits = np.concatenate(logits)
    shape = logits.shape[1:]
    features = datasets.Features({"id": datasets.Value("string"), "soft_label": datasets.Array3D(shape=shape, dtype="float16")})
    ids = split["id"] if "id" in split.column_names else [str(i) for i in range(len(split))]
    staging = cache_dir + ".tmp"
    os.makedirs(staging, exist_ok=True)
    datasets.Dataset.from_dict({"id": ids, "soft_label": list(logits)}, features=features).save_to_disk(os.path.join(staging, "hf"))
    atomic_write_json(os.path.join(staging, RECORD), record)
    replace_folder(staging, cache_dir)
    return logits
