"""Fixtures shared by the test modules."""

import pytest
import torch
from helpers import find_sos_root, sos_root_candidates, tiny_pipeline


@pytest.fixture(scope="session")
def sos_root():
    """The real SOS subset (skipped where it is absent; it may not be redistributed)."""
    root = find_sos_root()
    if root is None:
        pytest.skip(f"SOS subset not found at {sos_root_candidates()} (set DAKTER_SOS_ROOT)")
    return root


@pytest.fixture(scope="session")
def pipeline_dir(request, tmp_path_factory):
    """A saved `helpers.tiny_pipeline()` (background/oil, x0); read it, never write into it.

    `@pytest.mark.parametrize("pipeline_dir", ["v"], indirect=True)`: the v-prediction one instead.
    """
    kind = getattr(request, "param", "x0")
    assert kind in ("x0", "v"), kind
    path = str(tmp_path_factory.mktemp(f"pipe-{kind}") / "pipeline")
    tiny_pipeline(v_prediction=kind == "v").save_pretrained(path)
    return path


@pytest.fixture
def one_thread():
    """The CPUs are shared; one thread is several times faster than two here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
