"""A finished generation as a Hub dataset repo."""

from __future__ import annotations

import os

from dakter_hf.utils.hub import push_folder


def push_generated_dataset(out: str, repo_id: str, private: bool = False, api=None) -> str:
    """Upload the card and parquet shards as a Hub dataset repo (not the save_to_disk copy, not the candidates)."""

    if not os.path.isfile(os.path.join(out, "README.md")):
        raise FileNotFoundError(f"{out}: no dataset card; generation is not complete")
    ignore = ["hf/*", "*.tmp", ".soft_label_kl/*", "candidates/*"]  # candidates: a curated set's over-generation
    return push_folder(out, repo_id, private=private, repo_type="dataset", api=api, ignore_patterns=ignore)
