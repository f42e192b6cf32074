"""A real browser on the Space: Debian's chromium, driven by Playwright, clicks Generate.

No browser is downloaded: `scripts/test.sh` (the README test command, which `.ci/run` runs)
installs chromium with apt and playwright with pip.
A missing chromium or playwright FAILS this test (it does not skip): the Space's page
must be checked in a browser on every CI run.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT
from PIL import Image

MODELS = REPO_ROOT / "spaces" / "models"


@pytest.fixture(scope="module")
def space_url(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared CPUs: one thread is faster here (see conftest.one_thread)
    from dakter_hf.space.launch import create_demo, launch

    demo = create_demo(models_root=str(MODELS), workdir=str(tmp_path_factory.mktemp("space")))
    _, url, _ = launch(demo, prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()
    torch.set_num_threads(threads)


def test_generate_in_a_real_browser(space_url, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        pytest.fail(f"playwright is not installed ({error}): pip install -e '.[test]'")
    from dakter_hf.space.browser import chromium_path, launch_chromium

    try:
        chromium_path()
    except FileNotFoundError as error:
        pytest.fail(str(error))

    screenshot = tmp_path / "generate.png"
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(space_url, wait_until="domcontentloaded")
            page.locator("#generate-button").click(timeout=60_000)
            overlay = page.locator("#generated-overlays img").first
            overlay.wait_for(state="visible", timeout=120_000)
            page.locator("#generated-probabilities img").first.wait_for(state="visible", timeout=30_000)
            natural = overlay.evaluate("img => img.complete ? [img.naturalWidth, img.naturalHeight] : [0, 0]")
            page.screenshot(path=str(screenshot), full_page=True)
            status = page.locator("#generate-status").inner_text()
        finally:
            browser.close()

    assert natural[0] > 0 and natural[1] > 0, f"the mask overlay image did not load: natural size {natural}"
    assert "Generated 4 sample(s)" in status, status
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    assert pixels.shape[0] >= 600 and pixels.std() > 10, f"the screenshot looks blank (std {pixels.std():.1f})"
