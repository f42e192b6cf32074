"""A real browser on the Space: Debian's chromium, driven by Playwright, clicks Generate.

No browser is downloaded: `scripts/test.sh` (the README test command, which `.ci/run` runs)
installs chromium with apt and playwright with pip.
A missing chromium or playwright FAILS this test (it does not skip): the Space's page
must be checked in a browser on every CI run.
"""

import contextlib

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


@contextlib.contextmanager
def space_page(url, height):
    """A chromium page 1280 px wide on the Space at `url`; the browser closes afterwards."""
    from playwright.sync_api import sync_playwright

    from dakter_hf.space.browser import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": height})
            page.goto(url, wait_until="domcontentloaded")
            yield page
        finally:
            browser.close()


def natural_size(image):
    """[width, height] of a loaded <img> (what it decoded to), [0, 0] while it has not loaded."""
    return image.evaluate("img => img.complete ? [img.naturalWidth, img.naturalHeight] : [0, 0]")


def test_generate_in_a_real_browser(space_url, tmp_path):
    try:
        import playwright.sync_api  # noqa: F401 (is it installed? space_page uses it)
    except ImportError as error:
        pytest.fail(f"playwright is not installed ({error}): pip install -e '.[test]'")
    from dakter_hf.space.browser import chromium_path

    try:
        chromium_path()
    except FileNotFoundError as error:
        pytest.fail(str(error))

    screenshot = tmp_path / "generate.png"
    with space_page(space_url, height=900) as page:
        page.locator("#generate-button").click(timeout=60_000)
        overlay = page.locator("#generated-overlays img").first
        overlay.wait_for(state="visible", timeout=120_000)
        page.locator("#generated-probabilities img").first.wait_for(state="visible", timeout=30_000)
        natural = natural_size(overlay)
        page.screenshot(path=str(screenshot), full_page=True)
        status = page.locator("#generate-status").inner_text()

    assert natural[0] > 0 and natural[1] > 0, f"the mask overlay image did not load: natural size {natural}"
    assert "Generated 4 sample(s)" in status, status
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    assert pixels.shape[0] >= 600 and pixels.std() > 10, f"the screenshot looks blank (std {pixels.std():.1f})"


def test_segment_shows_the_uncertainty_map_in_a_real_browser(space_url, tmp_path):
    """Example scene -> Segment: the entropy map with its colour bar and the confident oil area are on the page."""
    screenshot = tmp_path / "segment.png"
    with space_page(space_url, height=1400) as page:
        page.get_by_role("tab", name="Segment").click()
        page.get_by_role("button", name="Synthetic example scene").click()
        page.locator("#scene-file a").first.wait_for(timeout=60_000)
        page.locator("#segment-button").click()
        uncertainty = page.locator("#segment-uncertainty img")
        uncertainty.wait_for(state="visible", timeout=180_000)
        natural = natural_size(uncertainty)
        page.locator("#uncertainty-file a").first.wait_for(timeout=30_000)
        status = page.locator("#segment-status").inner_text()
        confident = page.locator("#confident-oil-percent input").input_value()
        uncertainty.screenshot(path=str(screenshot))

    assert natural[0] > 0 and natural[1] > 0, f"the uncertainty map did not load: natural size {natural}"
    assert "Confident oil (p(oil) ≥ 0.90)" in status and "in total" in status, status
    assert confident != "" and 0 <= float(confident) <= 100
    pixels = np.asarray(Image.open(screenshot).convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10, f"the uncertainty map looks blank (std {pixels.std():.1f})"
