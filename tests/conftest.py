"""Shared fixtures: real media fetched by scripts/fetch_test_media.sh.

Media live in ``.cache/media`` (or ``$VMAS_TEST_MEDIA``). Outside CI a missing file skips
the test with the command to run; with ``VMAS_REQUIRE_MEDIA=1`` (set by .ci/run) it fails.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import dummies`
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

MEDIA_DIR = Path(os.environ.get("VMAS_TEST_MEDIA", ROOT / ".cache" / "media"))


def media_path(name: str) -> Path:
    path = MEDIA_DIR / name
    if not path.exists():
        message = f"test media {path} missing: run `bash scripts/fetch_test_media.sh`"
        if os.environ.get("VMAS_REQUIRE_MEDIA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def media():
    """``media("bikes.mp4")`` -> Path of a fetched real media file."""
    return media_path


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden", action="store_true", default=False,
        help="re-record tests/golden/golden_slices.json from the current code and weights",
    )
