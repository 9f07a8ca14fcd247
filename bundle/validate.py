"""The one validation both sides run: `validate_bundle` (directory, manifest, files) and `check_io` (graphs).

Training runs them before it publishes a bundle (and adds parity with PyTorch, which needs torch);
the service runs them before it serves one. A failure raises `BundleError` naming the file or field.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import BundleError
from .layout import MANIFEST, NAME_RE, VERSION_RE, sha256_file
from .manifest import Graph, Manifest

# ONNX Runtime's type strings -> the manifest's dtypes
ORT_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(double)": "float64",
              "tensor(int32)": "int32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8"}


@dataclass(frozen=True)
class ValidBundle:
    """A bundle directory that passed `validate_bundle`: its path, typed manifest and the raw JSON."""

    path: Path
    manifest: Manifest
    raw: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.manifest.name}/{self.manifest.version}"


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False):
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_manifest(raw: Any, where: str = "manifest") -> Manifest:
    """The typed manifest of a decoded manifest.json; BundleError saying which rule it breaks."""
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: manifest.json must hold a JSON object, got {type(raw).__name__}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        raise BundleError(f"{where}: {_describe(e)}") from None


def read_manifest(bundle_path: Path | str) -> tuple[Manifest, dict[str, Any]]:
    path = Path(bundle_path) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle_path}: missing file {MANIFEST}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        raise BundleError(f"{path}: manifest is not readable JSON ({e})") from e
    return parse_manifest(raw, str(path)), raw


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def check_location(bundle_path: Path, manifest: Manifest, name: str | None = None,
                   version: int | None = None) -> None:
    """The manifest's name and version equal the directory names (or the expected ones, for a staging dir)."""
    bundle_path = Path(bundle_path)
    if name is None:
        name = bundle_path.resolve().parent.name
        if not NAME_RE.match(name):
            raise BundleError(f"{bundle_path}: model directory name {name!r} is not a valid bundle name")
    if version is None:
        if not VERSION_RE.match(bundle_path.name):
            raise BundleError(f"{bundle_path}: version directory {bundle_path.name!r} is not an integer >= 1 "
                              "without a leading zero")
        version = int(bundle_path.name)
    if manifest.name != name:
        raise BundleError(f"{bundle_path}: manifest name {manifest.name!r} differs from directory {name!r}")
    if manifest.version != version:
        raise BundleError(f"{bundle_path}: manifest version {manifest.version} differs from directory {version}")


def check_files(bundle_path: Path, manifest: Manifest) -> int:
    """Every file but manifest.json is listed with its sha256, and nothing else is there. Returns the count."""
    bundle_path = Path(bundle_path)
    present = {p.relative_to(bundle_path).as_posix() for p in bundle_path.rglob("*") if p.is_file()} - {MANIFEST}
    listed = set(manifest.files)
    missing, extra = sorted(listed - present), sorted(present - listed)
    if missing:
        raise BundleError(f"{bundle_path}: missing file {missing[0]!r} (listed in the manifest)")
    if extra:
        raise BundleError(f"{bundle_path}: extra file {extra[0]!r} not listed in the manifest")
    for rel, expected in sorted(manifest.files.items()):
        actual = sha256_file(bundle_path / rel)
        if actual != expected.lower():
            raise BundleError(f"{bundle_path}: sha256 mismatch for {rel!r}: manifest says {expected}, file has {actual}")
    return len(listed)


def validate_bundle(bundle_path: Path | str, *, name: str | None = None, version: int | None = None) -> ValidBundle:
    """Check a bundle directory against the contract: manifest, location, files and hashes.

    `name`/`version` replace the directory names while a bundle sits in a staging directory.
    The graphs themselves are checked once a session holds them (`check_io`).
    """
    bundle_path = Path(bundle_path)
    if not bundle_path.is_dir():
        raise BundleError(f"{bundle_path}: not a bundle directory")
    manifest, raw = read_manifest(bundle_path)
    check_location(bundle_path, manifest, name, version)
    check_files(bundle_path, manifest)
    return ValidBundle(bundle_path, manifest, raw)


def signature(args) -> dict[str, dict[str, Any]]:
    """ONNX Runtime NodeArgs -> {name: {"dtype", "dims"}} with dynamic axes as -1."""
    return {a.name: {"dtype": ORT_DTYPES.get(a.type, a.type),
                     "dims": [d if isinstance(d, int) else -1 for d in a.shape]} for a in args}


def check_io(session, graph: Graph, key: str) -> None:
    """The session's real inputs and outputs are exactly the ones the manifest declares (names, dtypes, dims)."""
    for side, args in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        actual = signature(args)
        declared = {n: t.model_dump() for n, t in getattr(graph, side).items()}
        if actual != declared:
            diff = sorted(n for n in set(actual) | set(declared) if actual.get(n) != declared.get(n))
            raise BundleError(f"graph {key!r} {side} do not match the manifest ({', '.join(diff)}): "
                              f"graph has {actual}, manifest says {declared}")
