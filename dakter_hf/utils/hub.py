"""Uploads to the Hugging Face Hub, behind one function tests can replace with a local stand-in."""

from __future__ import annotations

import os
from typing import List, Optional


def is_hub_id(spec: str) -> bool:
    """owner/name, not an existing local path."""
    return (
        not os.path.exists(spec)
        and spec.count("/") == 1
        and not spec.startswith((".", "/", "~"))
        and all(spec.split("/"))
    )


def push_folder(
    folder: str,
    repo_id: str,
    private: bool = False,
    repo_type: str = "model",
    api: Optional[object] = None,
    commit_message: Optional[str] = None,
    ignore_patterns: Optional[List[str]] = None,
) -> str:
    """Create the repo if needed and upload `folder`; returns the repo id.

    `api` is a `huggingface_hub.HfApi` (or anything with `create_repo` and
    `upload_folder`), so the call path can be exercised offline.
    """
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo_id=repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(
        folder_path=folder,
        repo_id=repo_id,
        repo_type=repo_type,
        commit_message=commit_message or f"Upload {repo_type} with dakter-hf",
        ignore_patterns=ignore_patterns,
    )
    return repo_id
