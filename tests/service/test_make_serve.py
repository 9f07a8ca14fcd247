"""`make serve` passes the documented HISTOSERVE_HOST/PORT through; `make serve PORT=...` still wins."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def _serve_line(*args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT", "HISTOSERVE_HOST", "HISTOSERVE_PORT")}
    out = subprocess.run(["make", "-n", "serve", *args], cwd=REPO_ROOT, env={**clean, **env}, capture_output=True,
                         text=True, check=True).stdout
    return next(line for line in out.splitlines() if "-m service" in line)


def test_defaults():
    assert "HISTOSERVE_HOST=127.0.0.1 HISTOSERVE_PORT=8000 " in _serve_line()


def test_environment_is_honoured():
    assert "HISTOSERVE_HOST=0.0.0.0 HISTOSERVE_PORT=9001 " in _serve_line(HISTOSERVE_HOST="0.0.0.0",
                                                                          HISTOSERVE_PORT="9001")


def test_command_line_wins_and_a_generic_host_variable_does_not_leak_in():
    line = _serve_line("PORT=9100", HISTOSERVE_PORT="9001", HOST="some-shell-hostname")
    assert "HISTOSERVE_HOST=127.0.0.1 HISTOSERVE_PORT=9100 " in line
