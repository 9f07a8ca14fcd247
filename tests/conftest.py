"""Shared fixtures: where the real data lives, and a clear skip when it does not."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# For a `python -m service` the tests start: the repository first, then whatever this interpreter was
# already given (packages installed with --target, as on a GPU host that cannot download).
SUBPROCESS_PYTHONPATH = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
# The datasets are never copied into the project: CI finds them beside the clone.
DATA_DIR = Path(os.environ.get("HISTOSERVE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def _dataset(name: str) -> Path:
    path = DATA_DIR / name
    if not path.is_dir():
        pytest.skip(f"real data {name!r} not found at {path} (set HISTOSERVE_DATA_DIR to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def ebhi_dir() -> Path:
    return _dataset("ebhi_seg")


@pytest.fixture(scope="session")
def ebhi_masks_dir() -> Path:
    return _dataset("ebhi_seg_masks")


@pytest.fixture(scope="session")
def breakhis_dir() -> Path:
    return _dataset("breakhis_200x")
