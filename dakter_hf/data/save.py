"""Write a DatasetDict in both forms people load: `save_to_disk` and Hub-style parquet shards.

    OUT/hf/                               datasets.load_from_disk(OUT/hf)
    OUT/data/{split}-00000-of-0000N.parquet datasets.load_dataset("parquet", data_dir=OUT/data)

Everything is written under a temporary sibling folder first and renamed into place,
so an interrupted run never leaves a half-written OUT behind.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from typing import Dict, Optional

import datasets

from dakter_hf.utils.files import atomic_write_text, replace_folder


def parquet_shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def write_parquet_shards(dataset: datasets.Dataset, folder: str, split: str, max_rows_per_shard: int = 1000) -> int:
    """Write one split as parquet shards (features kept in the schema metadata)."""
    count = max(1, math.ceil(len(dataset) / max_rows_per_shard))
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        shard = dataset.shard(num_shards=count, index=index, contiguous=True)
        shard.to_parquet(os.path.join(folder, parquet_shard_name(split, index, count)))
    return count


def save_dataset(
    data: datasets.DatasetDict,
    out: str,
    overwrite: bool = False,
    max_rows_per_shard: int = 1000,
    extra_files: Optional[Dict[str, str]] = None,
) -> Dict[str, str]:
    """Save `data` to OUT/hf and OUT/data/*.parquet atomically; returns both paths.

    `extra_files` ({name: text}, e.g. the ownership marker and a card) are written into
    the staging folder too, so they appear together with the data.
    """
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"--out {out} already exists; pass --overwrite to replace it")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=os.path.basename(out) + ".tmp-", dir=parent)
    try:
        data.save_to_disk(os.path.join(staging, "hf"))
        for split, dataset in data.items():
            write_parquet_shards(dataset, os.path.join(staging, "data"), split, max_rows_per_shard)
        for name, text in (extra_files or {}).items():
            atomic_write_text(os.path.join(staging, name), text)
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"hf": os.path.join(out, "hf"), "parquet": os.path.join(out, "data")}
