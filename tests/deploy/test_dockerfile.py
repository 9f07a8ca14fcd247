"""The Dockerfile, checked offline: hadolint passes with every ignored rule explained, and
the serving stage has the shape the deployment relies on (CUDA 13 + cuDNN 9 base, one ONNX
Runtime extra and no torch, non-root, bundles baked in, volumes, a Python health check)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"


def hadolint(binary: Path, dockerfile: Path) -> subprocess.CompletedProcess:
    # --no-color for readable failures; the default failure threshold fails on any finding, even "info".
    return subprocess.run([binary, "--no-color", dockerfile], capture_output=True, text=True, timeout=60,
                          cwd=dockerfile.parent)


def stages(text: str) -> dict[str, str]:
    """Stage name -> the stage's text (FROM line included)."""
    parts = re.split(r"(?m)^(?=FROM )", text)
    out = {}
    for part in parts[1:]:
        match = re.match(r"FROM (\S+)(?: AS (\S+))?", part)
        out[match.group(2) or match.group(1)] = part
    return out


def test_hadolint_passes(hadolint_bin):
    result = hadolint(hadolint_bin, DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


BROKEN = {
    "untagged base": ("ARG UBUNTU_IMAGE=ubuntu:24.04", "ARG UBUNTU_IMAGE=ubuntu:24.04\nFROM ubuntu AS extra"),
    "cd in RUN": ("WORKDIR /src\nCOPY pyproject.toml", "RUN cd /src\nWORKDIR /src\nCOPY pyproject.toml"),
    "root at the end": ('CMD ["python", "-m", "service"]', 'USER root\nCMD ["python", "-m", "service"]'),
    "unexplained ignore dropped": ("# hadolint ignore=DL3008\n", ""),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_hadolint_fails_on_broken_copy(hadolint_bin, tmp_path, breakage):
    old, new = BROKEN[breakage]
    text = DOCKERFILE.read_text()
    assert old in text, f"fixture drift: {old!r}"
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new, 1))
    assert hadolint(hadolint_bin, broken).returncode != 0


def unexplained_ignores(text: str) -> list[str]:
    """`# hadolint ignore=` lines without a comment line of reasons right above them."""
    lines = text.splitlines()
    bad = []
    for i, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            above = lines[i - 1].strip() if i else ""
            if not above.startswith("#") or "hadolint ignore" in above or len(above) < 20:
                bad.append(f"line {i + 1}: {line.strip()}")
    return bad


def test_every_ignored_rule_is_explained():
    assert unexplained_ignores(DOCKERFILE.read_text()) == []
    # No global ignore list either: the ignores live next to the line they excuse.
    assert not (REPO_ROOT / ".hadolint.yaml").exists() and not (REPO_ROOT / ".hadolint.yml").exists()


def test_ignore_check_fails_on_bare_ignore():
    bare = DOCKERFILE.read_text() + "RUN true\n# hadolint ignore=DL3013\nRUN pip install requests\n"
    assert unexplained_ignores(bare) == [f"line {len(bare.splitlines()) - 1}: # hadolint ignore=DL3013"]


def test_serving_stage_shape():
    text = DOCKERFILE.read_text()
    found = stages(text)
    # The GPU base: a real NVIDIA CUDA 13 runtime tag with cuDNN (what onnxruntime-gpu 1.31 needs).
    cuda_image = re.search(r"(?m)^ARG CUDA_IMAGE=(\S+)$", text).group(1)
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.\d\d", cuda_image)
    assert "FROM ${CUDA_IMAGE} AS base-gpu" in text and "FROM ${UBUNTU_IMAGE} AS base-cpu" in text
    assert re.search(r"(?m)^ARG RUNTIME=gpu$", text)
    # One ONNX Runtime extra, chosen by RUNTIME, from a build stage that copies service/ only.
    build = found["build"]
    assert 'pip install ".[${RUNTIME}]"' in build
    assert "COPY models/" not in build and "COPY training/" not in build
    serve = found["serve"]
    assert serve.startswith("FROM base-${RUNTIME} AS serve")
    assert list(found)[-1] == "serve", "serve must be the last stage so a plain `docker build` makes it"
    users = re.findall(r"(?m)^USER (\S+)$", serve)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert "COPY model_store/ /srv/histoserve/model_store/" in serve
    assert 'VOLUME ["/srv/histoserve/model_store", "/srv/histoserve/state"]' in serve
    assert re.search(r'HEALTHCHECK .*\n\s+CMD \["python", "/opt/histoserve/healthcheck.py", "/healthz"\]', serve)
    assert 'CMD ["python", "-m", "service"]' in serve
    # The CUDA image refuses to start without CUDA by default; the CPU image does not ask for it.
    assert "HISTOSERVE_REQUIRE_CUDA=true" in found["base-gpu"]
    assert "HISTOSERVE_REQUIRE_CUDA=false" in found["base-cpu"]


def test_image_environment_uses_real_settings():
    # Every HISTOSERVE_ variable the image sets must be a field of service.settings.Settings,
    # or the service would silently ignore it (extra="ignore").
    from service.settings import Settings

    names = set(re.findall(r"HISTOSERVE_([A-Z_]+)=", DOCKERFILE.read_text()))
    assert names
    assert {n.lower() for n in names} <= set(Settings.model_fields)


def test_dockerignore_keeps_the_context_small():
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {"**/.git", "**/.venv", "tests/"} <= ignored
    # ...but never what a stage copies.
    copied = {"bundle/", "service/", "models/", "training/", "model_store/", "pyproject.toml", "README.md",
              "deploy/", "deploy/healthcheck.py"}
    assert not copied & ignored
