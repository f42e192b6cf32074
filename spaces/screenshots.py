#!/usr/bin/env python
"""Screenshots of the Space's three tabs for the README, taken in Debian's headless chromium.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python spaces/screenshots.py   # writes docs/space/{generate,segment,about}.png

Starts the app in-process with the committed default models, drives it with Playwright
(no browser download; needs `apt-get install chromium` and `pip install playwright`),
and saves palette PNGs so the committed files stay small.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile


os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
VIEWPORT = {"width": 1280, "height": 900}


def save_small(png_bytes: bytes, path: str) -> int:
    """256-colour PNG written through a temporary name; returns its size in bytes."""
    import io

    from PIL import Image

    from dakter_hf.utils.files import atomic_path

    image = Image.open(io.BytesIO(png_bytes)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG", optimize=True)
    return os.path.getsize(path)


def take(url: str, out: str) -> dict:
    from playwright.sync_api import sync_playwright

    from dakter_hf.space.browser import launch_chromium

    sizes = {}
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#generate-button").click(timeout=60_000)
            page.locator("#generated-probabilities img").last.wait_for(state="visible", timeout=180_000)
            page.wait_for_timeout(500)
            sizes["generate"] = save_small(page.screenshot(full_page=True), os.path.join(out, "generate.png"))

            page.get_by_role("tab", name="Segment").click()
            page.get_by_role("button", name="Synthetic example scene").click()
            page.locator("#scene-file a").first.wait_for(timeout=60_000)  # the example file is in place
            page.locator("#segment-button").click()
            page.locator("#segment-overlay img").wait_for(state="visible", timeout=180_000)
            page.locator("#segment-probabilities img").wait_for(state="visible", timeout=60_000)
            page.locator("#segment-uncertainty img").wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(500)
            sizes["segment"] = save_small(page.screenshot(full_page=True), os.path.join(out, "segment.png"))

            page.get_by_role("tab", name="About").click()
            page.get_by_text("The method in five lines").wait_for(timeout=30_000)
            sizes["about"] = save_small(page.screenshot(full_page=True), os.path.join(out, "about.png"))
        finally:
            browser.close()
    return sizes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Screenshots of the Space's tabs (headless chromium).")
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(HERE), "docs", "space"), help="folder for the PNGs"
    )
    args = parser.parse_args(argv)
    from dakter_hf.space.launch import create_demo, launch

    os.makedirs(args.out, exist_ok=True)
    demo = create_demo(models_root=os.path.join(HERE, "models"), workdir=tempfile.mkdtemp(prefix="dakter-screens-"))
    _, url, _ = launch(demo, prevent_thread_lock=True, quiet=True)
    try:
        sizes = take(url, args.out)
    finally:
        demo.close()
    for name, size in sizes.items():
        print(f"{os.path.join(args.out, name + '.png')}: {size / 1000:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
