"""Headless Debian chromium driven by Playwright: for the Space's browser test and screenshots.

Playwright's own browser download is never used (`playwright install` is not run):
the system chromium (`apt-get install chromium`) is started through `executable_path`.
The flags keep it from reaching the network, which the test machines do not have.
"""

from __future__ import annotations

import os
import shutil


CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    """The system chromium, or a FileNotFoundError saying how to install it."""
    for path in (os.environ.get("DAKTER_CHROMIUM"),) + CHROMIUM_CANDIDATES:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which("chromium")
    if found:
        return found
    raise FileNotFoundError(
        "no chromium found at /usr/bin/chromium: install it with `apt-get install -y chromium` (or set "
        "DAKTER_CHROMIUM)"
    )


def launch_chromium(playwright):
    """A headless chromium `Browser` from `sync_playwright()`."""
    return playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
