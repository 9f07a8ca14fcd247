"""Few-shot adapters: one prototype (mean embedding) per class of a support set, as in ProtoNet.

An adapter is persisted as one `.npz` file under `<state_dir>/adapters/`, holding two plain
arrays: `prototypes` (float32) and `meta` (UTF-8 JSON as uint8). It is read back with
`allow_pickle=False`, so no file can run code. Writes are atomic: a temporary file in the
same directory, fsync, rename, fsync of the directory; a writer killed half-way leaves only
a `.tmp-*` file, which start-up removes, and never a damaged adapter. File names are the
server's own random ids, never anything the client sent.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import secrets
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

log = logging.getLogger("histoserve.adapters")

ADAPTER_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_TMP_PREFIX = ".tmp-"


def distances(embeddings: np.ndarray, prototypes: np.ndarray, metric: str) -> np.ndarray:
    """(N, D) x (K, D) -> (N, K) distances under the bundle's training metric."""
    e = embeddings.astype(np.float64)
    p = prototypes.astype(np.float64)
    if metric == "cosine":
        en = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        pn = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        return 1.0 - en @ pn.T
    sq = (e**2).sum(1)[:, None] - 2.0 * e @ p.T + (p**2).sum(1)[None, :]
    sq = np.maximum(sq, 0.0)
    return np.sqrt(sq) if metric == "euclidean" else sq


def softmax_neg(d: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities from a softmax over negative distances, as the prototype loss defines them."""
    z = -d / temperature
    z = z - z.max(axis=1, keepdims=True)
    ez = np.exp(z)
    return ez / ez.sum(axis=1, keepdims=True)


def prototypes(embeddings: np.ndarray, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Classes in first-seen order, and the mean embedding of each."""
    classes = list(dict.fromkeys(labels))
    idx = np.asarray([classes.index(label) for label in labels])
    protos = np.stack([embeddings[idx == k].mean(axis=0) for k in range(len(classes))])
    return classes, protos.astype(np.float32)


def leave_one_out_accuracy(embeddings: np.ndarray, labels: list[str], metric: str) -> float | None:
    """Each support image classified by prototypes built without it; None when no class has 2 shots.

    An image whose class has a single shot is skipped: without it, its class has no prototype.
    """
    classes, protos = prototypes(embeddings, labels)
    counts = {c: labels.count(c) for c in classes}
    sums = {c: embeddings[[i for i, lab in enumerate(labels) if lab == c]].astype(np.float64).sum(0) for c in classes}
    correct = total = 0
    for i, label in enumerate(labels):
        if counts[label] < 2:
            continue
        own = (sums[label] - embeddings[i]) / (counts[label] - 1)
        p = protos.astype(np.float64).copy()
        p[classes.index(label)] = own
        predicted = int(np.argmin(distances(embeddings[i : i + 1], p, metric)[0]))
        correct += predicted == classes.index(label)
        total += 1
    return correct / total if total else None


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

    def meta(self) -> dict:
        meta = asdict(self)
        meta.pop("prototypes")
        return meta

    def classify(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N, K) probabilities over the adapter's classes."""
        return softmax_neg(distances(embeddings, self.prototypes, self.distance), self.temperature)


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


def _encode(adapter: Adapter) -> bytes:
    buf = io.BytesIO()
    meta = np.frombuffer(json.dumps(adapter.meta()).encode("utf-8"), dtype=np.uint8)
    np.savez(buf, prototypes=adapter.prototypes.astype(np.float32), meta=meta)
    return buf.getvalue()


def _decode(path: Path) -> Adapter:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes().decode("utf-8"))
        protos = np.asarray(data["prototypes"], dtype=np.float32)
    adapter = Adapter(**meta, prototypes=protos)
    if adapter.id != path.stem or not ADAPTER_ID.match(adapter.id):
        raise ValueError(f"adapter id {adapter.id!r} does not match its file name")
    if protos.ndim != 2 or protos.shape[0] != len(adapter.classes) or not np.isfinite(protos).all():
        raise ValueError(f"prototypes of shape {protos.shape} do not fit {len(adapter.classes)} classes")
    return adapter


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AdapterStore:
    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir) / "adapters"
        self._adapters: dict[str, Adapter] = {}
        self._lock = threading.Lock()  # writes run in worker threads

    def __len__(self) -> int:
        return len(self._adapters)

    def load(self) -> list[tuple[Path, str]]:
        """Read every adapter on disk; return the files skipped, with the reason (already logged)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        skipped: list[tuple[Path, str]] = []
        for path in sorted(self.dir.iterdir()):
            if path.name.startswith(_TMP_PREFIX):
                # Left by a writer that died before its rename: never a complete adapter.
                log.warning("removing partial adapter file %s left by an interrupted write", path.name)
                skipped.append((path, "partial temporary file"))
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            if path.suffix != ".npz" or not ADAPTER_ID.match(path.stem):
                continue
            try:
                adapter = _decode(path)
            except Exception as e:  # any damage at all: skip this file, keep the others
                log.warning("skipping unreadable adapter file %s: %s", path.name, e)
                skipped.append((path, str(e)))
                continue
            self._adapters[adapter.id] = adapter
        return skipped

    def save(self, adapter: Adapter) -> None:
        """Write atomically, then make it visible."""
        payload = _encode(adapter)
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{adapter.id}-", suffix=".npz", dir=self.dir)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.dir / f"{adapter.id}.npz")
                _fsync_dir(self.dir)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            self._adapters[adapter.id] = adapter

    def get(self, adapter_id: str) -> Adapter | None:
        return self._adapters.get(adapter_id)

    def all(self) -> list[Adapter]:
        return sorted(self._adapters.values(), key=lambda a: a.created_at)

    def delete(self, adapter_id: str) -> bool:
        with self._lock:
            adapter = self._adapters.pop(adapter_id, None)
            if adapter is None:
                return False
            # The path is built from the stored adapter's own id, which the server generated.
            with contextlib.suppress(FileNotFoundError):
                (self.dir / f"{adapter.id}.npz").unlink()
            _fsync_dir(self.dir)
            return True


def check_support(labels: list[str], n_files: int, name: str | None, *, max_classes: int, max_shots: int,
                  label_max_length: int, label_pattern: str) -> list[str]:
    """The support set's labels, checked against the limits; each broken rule is a 422 saying which."""
    from .errors import ServiceError  # imported here: errors.py is the HTTP side of this module

    def bad(message: str, detail: object = None) -> ServiceError:
        return ServiceError(422, "invalid_support_set", message, detail)

    # `labels=a,b,c` in one field is the same as three fields: friendlier for curl users.
    if len(labels) == 1 and n_files > 1 and "," in labels[0]:
        labels = [s.strip() for s in labels[0].split(",")]
    if n_files == 0:
        raise bad("the support set has no images")
    if len(labels) != n_files:
        raise bad(f"{n_files} files but {len(labels)} labels; give one label per file, in the same order")
    pattern = re.compile(label_pattern)
    for text in [*labels, *([name] if name is not None else [])]:
        if not text or len(text) > label_max_length or not pattern.fullmatch(text):
            raise bad(f"label or name {text[:80]!r} must be 1..{label_max_length} characters matching {label_pattern}")
    classes = list(dict.fromkeys(labels))
    if len(classes) < 2:
        raise bad(f"the support set has {len(classes)} class; at least 2 are needed", {"classes": classes})
    if len(classes) > max_classes:
        raise bad(f"the support set has {len(classes)} classes; the limit is {max_classes}")
    shots = {c: labels.count(c) for c in classes}
    over = {c: n for c, n in shots.items() if n > max_shots}
    if over:
        raise bad(f"at most {max_shots} shots per class", {"shots": over})
    return labels
