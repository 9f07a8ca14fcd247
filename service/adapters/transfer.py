"""An adapter as a portable file, for `GET /adapters/{id}/export` and `POST /adapters/import`.

One JSON document, no pickle, readable by anything:

    {"format": "histoserve-adapter", "format_version": 2,
     "bundle": {"name": "...", "version": 1, "model_sha256": "<sha256 of the bundle's model.onnx>"},
     "header": {"format": 2, "head": "cosine"},
     "meta": {...every field of the adapter but its arrays...},
     "arrays": {"prototypes": {"dtype": "float32", "shape": [K, D], "data": "<base64, little-endian>"}, ...},
     "checksum": "sha256:<hex of the canonical JSON of everything above>"}

The canonical JSON is `json.dumps(doc, sort_keys=True, separators=(",", ":"))` without `checksum`.
Reading checks the checksum first, then rebuilds the adapter through the same checks as a stored file
(`model.from_parts`), so a damaged or hand-edited file is refused, never half-read.
"""
from __future__ import annotations

import base64
import hashlib
import json

import numpy as np

from .model import ADAPTER_FORMAT, Adapter, from_parts, parts

DOCUMENT = "histoserve-adapter"
MAX_ARRAY_VALUES = 50_000_000  # a file may not ask for more floats than this in total


class TransferError(ValueError):
    """A file that is not an adapter this server can take; the message says why."""


def _canonical(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def checksum(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()


def export_adapter(adapter: Adapter, model_sha256: str) -> bytes:
    meta, header, arrays = parts(adapter)
    doc = {"format": DOCUMENT, "format_version": ADAPTER_FORMAT,
           "bundle": {"name": adapter.model, "version": adapter.version, "model_sha256": model_sha256},
           "header": header, "meta": meta,
           "arrays": {name: {"dtype": "float32", "shape": list(a.shape),
                             "data": base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")}
                      for name, a in arrays.items()}}
    doc["checksum"] = checksum(doc)
    return json.dumps(doc, indent=1).encode("utf-8")


def _array(name: str, spec: object, budget: list[int]) -> np.ndarray:
    if not isinstance(spec, dict) or spec.get("dtype") != "float32" or not isinstance(spec.get("data"), str):
        raise TransferError(f"array {name!r} is not a float32 array with base64 data")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape) or len(shape) > 2:
        raise TransferError(f"array {name!r} has shape {shape!r}, not a list of at most 2 sizes")
    size = int(np.prod(shape)) if shape else 1
    budget[0] -= size
    if budget[0] < 0:
        raise TransferError(f"the arrays hold more than {MAX_ARRAY_VALUES} values")
    try:
        raw = base64.b64decode(spec["data"], validate=True)
    except ValueError as e:
        raise TransferError(f"array {name!r}: {e}") from e
    if len(raw) != 4 * size:
        raise TransferError(f"array {name!r} holds {len(raw)} bytes, its shape {shape} needs {4 * size}")
    return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)


def import_adapter(payload: bytes) -> tuple[Adapter, dict]:
    """(the adapter, the bundle it names {"name", "version", "model_sha256"}); TransferError on any damage."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TransferError(f"not a JSON document: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != DOCUMENT:
        raise TransferError(f"not a {DOCUMENT} file")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > ADAPTER_FORMAT:
        raise TransferError(f"format_version {version!r} is newer than this server's {ADAPTER_FORMAT}")
    if doc.get("checksum") != checksum(doc):
        raise TransferError("the checksum does not match the content: the file was damaged or edited")
    bundle = doc.get("bundle")
    if (not isinstance(bundle, dict) or not isinstance(bundle.get("name"), str)
            or not isinstance(bundle.get("version"), int) or not isinstance(bundle.get("model_sha256"), str)):
        raise TransferError("the file does not name its embedding bundle (name, version, model_sha256)")
    arrays_doc, meta, header = doc.get("arrays"), doc.get("meta"), doc.get("header")
    if not isinstance(arrays_doc, dict) or not isinstance(meta, dict) or not isinstance(header, dict):
        raise TransferError("the file has no header, meta and arrays")
    budget = [MAX_ARRAY_VALUES]
    arrays = {str(name): _array(str(name), spec, budget) for name, spec in arrays_doc.items()}
    try:
        adapter = from_parts(meta, header, arrays, expected_id=None)
    except Exception as e:  # any field of the wrong type or shape: the file is refused, never half-read
        raise TransferError(f"the adapter does not check out: {e}") from e
    if (adapter.model, adapter.version) != (bundle["name"], bundle["version"]):
        raise TransferError(f"the adapter says {adapter.model}/{adapter.version}, the file "
                            f"{bundle['name']}/{bundle['version']}")
    if adapter.bundle_sha256 is not None and adapter.bundle_sha256 != bundle["model_sha256"]:
        raise TransferError("the adapter's bundle hash and the file's differ")
    return adapter, bundle
