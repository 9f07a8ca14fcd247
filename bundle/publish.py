"""Writing a bundle: build it in a hidden staging directory, validate it there, rename it into place.

A published version is never replaced or removed (bundles are immutable: their hashes are what the
service trusts); a staging directory that fails is removed and nothing is published.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import BundleError
from .layout import MANIFEST, STAGING_PREFIX, bundle_dir, hash_files
from .validate import ValidBundle, validate_bundle


def portable(value: Any) -> Any:
    """`value` with every absolute path string replaced by its last part (the dataset or file name).

    Format 2 manifests record dataset names and relative paths only: an absolute path names one
    machine's disk, and the bundle outlives it.
    """
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v) for v in value]
    if isinstance(value, str | Path) and Path(value).is_absolute() and " " not in str(value):
        return Path(value).name
    return value


def _strict_json(value: Any, default: Callable | None) -> Any:
    """Plain JSON values: numpy scalars as numbers, NaN and infinities as null (strict JSON has neither)."""
    if isinstance(value, dict):
        return {k: _strict_json(v, default) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v, default) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if default is not None and not isinstance(value, str | int | float | bool | type(None)):
        return _strict_json(default(value), None)
    return value


def write_manifest(directory: Path, manifest: dict[str, Any], default: Callable | None = None) -> dict[str, Any]:
    """Hash every file in `directory` into `manifest["files"]` and write manifest.json; return the manifest.

    `default` turns other objects into JSON values (as json.dumps's); non-finite numbers become null,
    so a manifest is strict JSON that any reader (a browser's JSON.parse) accepts.
    """
    manifest = {**_strict_json(manifest, default), "files": hash_files(directory)}
    text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
    (Path(directory) / MANIFEST).write_text(text, encoding="utf-8")
    return manifest


@contextlib.contextmanager
def staging(store: Path | str, name: str, version: int) -> Iterator[Path]:
    """A fresh hidden directory beside `<store>/<name>/<version>`, removed unless `publish` moved it."""
    final = bundle_dir(store, name, version)
    if final.exists():
        raise FileExistsError(f"bundle {final} already exists: bundles are immutable, pick another version")
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.parent / f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def publish(staged: Path, store: Path | str, name: str, version: int,
            check: Callable[[ValidBundle], None] | None = None) -> Path:
    """Validate `staged` as `<name>/<version>` (plus `check`), then rename it to its final place."""
    valid = validate_bundle(staged, name=name, version=version)
    if check is not None:
        check(valid)
    final = bundle_dir(store, name, version)
    if final.exists():
        raise FileExistsError(f"bundle {final} already exists: bundles are immutable, pick another version")
    try:
        os.rename(staged, final)  # atomic on one filesystem; refuses a non-empty target on POSIX
    except OSError as e:
        raise BundleError(f"cannot publish {final}: {e}") from e
    return final
