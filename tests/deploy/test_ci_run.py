""".ci/run fails when it cannot install a system package: a test that CI skips proves nothing."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_ci_run_fails_when_a_system_package_cannot_be_installed(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # an apt-get that always fails, a make that must never be reached; nothing else on PATH but dirname
    (bin_dir / "apt-get").write_text("#!/bin/sh\necho 'E: no network' >&2\nexit 100\n")
    (bin_dir / "make").write_text("#!/bin/sh\necho MAKE-RAN\nexit 0\n")
    for tool in ("apt-get", "make"):
        (bin_dir / tool).chmod(0o755)
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    done = subprocess.run([shutil.which("bash"), str(REPO_ROOT / ".ci" / "run")], capture_output=True, text=True,
                          timeout=60, env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert done.returncode != 0, done.stdout + done.stderr
    assert "MAKE-RAN" not in done.stdout
    assert "error: could not install Debian's prometheus" in done.stderr
