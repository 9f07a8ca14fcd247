"""Where bundles live and how their files are named and hashed: `<store>/<name>/<version>/`.

Names and versions follow Triton's model repository: a version is a decimal directory without a
leading zero. Both are capped so that a path built from them stays short and safe.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

MANIFEST = "manifest.json"
CLASSIFY_FILE = "model.onnx"
GRADCAM_FILE = "gradcam.onnx"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
VERSION_PATTERN = r"^[1-9][0-9]{0,8}$"
NAME_RE = re.compile(NAME_PATTERN)
VERSION_RE = re.compile(VERSION_PATTERN)
MAX_VERSION = 999_999_999
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
STAGING_PREFIX = ".staging-"  # hidden: discovery skips dot-directories


def bundle_dir(store: Path | str, name: str, version: int) -> Path:
    return Path(store) / name / str(version)


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(directory: Path) -> dict[str, str]:
    """{relative posix path: sha256} of every file under `directory` but the manifest."""
    directory = Path(directory)
    return {p.relative_to(directory).as_posix(): sha256_file(p)
            for p in sorted(directory.rglob("*")) if p.is_file() and p.relative_to(directory).as_posix() != MANIFEST}


def versions(model_dir: Path) -> list[int]:
    """The version numbers under `model_dir` that follow the naming rule, ascending."""
    if not Path(model_dir).is_dir():
        return []
    return sorted(int(p.name) for p in Path(model_dir).iterdir() if p.is_dir() and VERSION_RE.match(p.name))


def next_version(model_dir: Path) -> int:
    """One more than the highest version directory under `model_dir` (1 when there is none)."""
    return max(versions(model_dir), default=0) + 1


def candidate_dirs(store: Path) -> Iterator[Path]:
    """Every `<store>/<name>/<version>` directory, hidden ones (staging) left out, sorted."""
    store = Path(store)
    if not store.is_dir():
        return
    for model_dir in sorted(p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")):
        yield from sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
