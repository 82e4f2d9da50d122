"""The browser test bed: Debian's headless chromium and playwright-core (``bash tests/browser/provision_browser.sh``).
Missing parts skip the browser tests locally and fail them on CI."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from testbed.env import ENV_DIR

CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = ENV_DIR / "node" / "node_modules" / "playwright-core"


@pytest.fixture(scope="session")
def browser_bed() -> dict[str, str]:
    """``{"chromium": …, "playwright": …}`` for a driver's config, once the test bed is complete."""
    missing = [str(p) for p in (CHROMIUM, PLAYWRIGHT) if not p.exists()]
    if shutil.which("node") is None:
        missing.append("node")
    if missing:
        msg = f"browser test bed missing ({', '.join(missing)}): run `bash tests/browser/provision_browser.sh`"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return {"chromium": str(CHROMIUM), "playwright": str(PLAYWRIGHT)}
