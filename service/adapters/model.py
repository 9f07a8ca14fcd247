"""The adapter record and its persisted format: one `.npz` of plain arrays, read without pickle.

Format (ADAPTER_FORMAT = 1): arrays `meta` (UTF-8 JSON of every field but the head's arrays and the
head name, as uint8), `header` (UTF-8 JSON `{"format": 1, "head": "prototype"}`, as uint8) and the head's
arrays (`prototypes`, float32). Files written before the header existed have no `header` and read as
format 1 with the prototype head; a server that predates the header ignores it and reads the rest, so
old and new replicas share one directory. A file with a newer format is refused, never half-read.
`encode`/`decode` work on bytes so that every backend (file, Redis) stores the same payload.
"""
from __future__ import annotations

import io
import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np

from .heads import HEADS, PROTOTYPE, leave_one_out_accuracy, prototypes, softmax_neg
from .heads import distances as _distances

ADAPTER_FORMAT = 1
ADAPTER_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass
class Adapter:
    id: str
    name: str | None
    model: str
    version: int
    classes: list[str]
    shots: dict[str, int]
    distance: str
    temperature: float
    loo_accuracy: float | None
    created_at: str
    prototypes: np.ndarray = field(repr=False)
    head: str = PROTOTYPE

    def meta(self) -> dict:
        """What the API shows: every field but the arrays."""
        meta = asdict(self)
        meta.pop("prototypes")
        return meta

    def classify(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N, K) probabilities over the adapter's classes."""
        return softmax_neg(_distances(embeddings, self.prototypes, self.distance), self.temperature)


def new_adapter(*, name: str | None, model: str, version: int, embeddings: np.ndarray, labels: list[str],
                distance: str, temperature: float) -> Adapter:
    classes, protos = prototypes(embeddings, labels)
    return Adapter(
        id=secrets.token_urlsafe(16), name=name, model=model, version=version, classes=classes,
        shots={c: labels.count(c) for c in classes}, distance=distance, temperature=temperature,
        loo_accuracy=leave_one_out_accuracy(embeddings, labels, distance),
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        prototypes=protos,
    )


def _json_array(obj: object) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def encode(adapter: Adapter) -> bytes:
    meta = adapter.meta()
    head = meta.pop("head")
    buf = io.BytesIO()
    np.savez(buf, prototypes=adapter.prototypes.astype(np.float32), meta=_json_array(meta),
             header=_json_array({"format": ADAPTER_FORMAT, "head": head}))
    return buf.getvalue()


def decode(payload: bytes, expected_id: str) -> Adapter:
    """The adapter in `payload`, checked; ValueError (or a numpy/zip error) on any damage."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes().decode("utf-8"))
        header = (json.loads(data["header"].tobytes().decode("utf-8")) if "header" in data.files
                  else {"format": 1, "head": PROTOTYPE})
        protos = np.asarray(data["prototypes"], dtype=np.float32)
    if not isinstance(header.get("format"), int) or header["format"] > ADAPTER_FORMAT:
        raise ValueError(f"adapter format {header.get('format')!r} is newer than this server's {ADAPTER_FORMAT}")
    if header.get("head") not in HEADS:
        raise ValueError(f"adapter head {header.get('head')!r} is not one of {HEADS}")
    adapter = Adapter(**meta, prototypes=protos, head=header["head"])
    if adapter.id != expected_id or not ADAPTER_ID.match(adapter.id):
        raise ValueError(f"adapter id {adapter.id!r} does not match its key {expected_id!r}")
    if protos.ndim != 2 or protos.shape[0] != len(adapter.classes) or not np.isfinite(protos).all():
        raise ValueError(f"prototypes of shape {protos.shape} do not fit {len(adapter.classes)} classes")
    return adapter
