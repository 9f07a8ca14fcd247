"""The adapter record and its persisted format: one `.npz` of plain arrays, read without pickle.

Format (ADAPTER_FORMAT = 3): arrays `meta` (UTF-8 JSON of every field but the arrays and the head
name, as uint8), `header` (UTF-8 JSON `{"format": 3, "head": "cosine"}`, as uint8), `prototypes`
(float32 class means of the support embeddings) and the head's own arrays as `head.<name>` (float32;
see `heads.Head`). Format 3 adds `embedding_part` and `embedding_slice` (an adapter on one named part of
its bundle's embedding); an adapter on the whole embedding is still written as format 2, without them, so
that a replica that predates format 3 keeps reading it. Format 1 files (header `{"format": 1, "head":
"prototype"}`, no `head.*` arrays, none of the fields added since) and files written before the header
existed read as the prototype head with no out-of-support threshold. A server that predates the header
ignores it and reads the rest; one that predates format 2 refuses its files (their meta has fields it does
not know); a file with a newer format than this server's is refused, never half-read. `encode`/`decode`
work on bytes so that every backend (file, Redis) stores the same payload.
"""
from __future__ import annotations

import io
import json
import re
import secrets
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

import numpy as np

from .heads import HEADS, PROTOTYPE, Head, out_of_support, prototypes, select_head

ADAPTER_FORMAT = 3
_PART_FIELDS = ("embedding_part", "embedding_slice")  # format 3's
ADAPTER_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_ARRAY_FIELDS = ("prototypes", "head_arrays")
_HEAD_PREFIX = "head."


@dataclass
class Adapter:
    id: str
    name: str | None
    model: str
    version: int
    classes: list[str]
    shots: dict[str, int]  # support images per class, before any augmentation
    distance: str  # the bundle's training metric
    temperature: float
    loo_accuracy: float | None  # the chosen head's held-out accuracy on the support set
    created_at: str
    prototypes: np.ndarray = field(repr=False)  # (K, D) class means of the support embeddings
    head: str = PROTOTYPE
    head_arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # empty for the prototype head
    head_params: dict = field(default_factory=dict)
    selection: dict | None = None  # how the head was chosen (heads.select_head); None before format 2
    out_of_support: dict | None = None  # the calibrated threshold; None before format 2
    augmentation: str | None = None  # "dihedral": every support image also embedded in its 7 other views
    bundle_sha256: str | None = None  # sha256 of the embedding bundle's model.onnx; None before format 2
    embedding_part: str | None = None  # the named part of the bundle's embedding it uses; None: all of it
    embedding_slice: list[int] | None = None  # that part's [start, stop) in the bundle's embedding

    def __post_init__(self) -> None:
        # Built once, checked once: a record whose head does not fit its classes is refused here.
        if self.head == PROTOTYPE:
            arrays = {"prototypes": self.prototypes}
            params = {"distance": self.distance, "temperature": self.temperature, **self.head_params}
        else:
            arrays, params = self.head_arrays, self.head_params
        self._head = Head(self.head, arrays, params)
        if self._head.n_classes != len(self.classes):
            raise ValueError(f"a head of {self._head.n_classes} classes for {len(self.classes)} classes")

    def meta(self) -> dict:
        """What the API shows: every field but the arrays."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _ARRAY_FIELDS}

    def view(self, embeddings: np.ndarray) -> np.ndarray:
        """The part of (N, D) bundle embeddings this adapter's head reads."""
        return embeddings if self.embedding_slice is None else embeddings[:, slice(*self.embedding_slice)]

    def classify(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N, K) probabilities over the adapter's classes."""
        return self._head.probabilities(self.view(embeddings))

    def outside(self, embeddings: np.ndarray) -> tuple[list[bool | None], list[float]]:
        """Per embedding: farther than the calibrated threshold from every class (None: not calibrated),
        and the distance to the nearest class in the head's geometry."""
        embeddings = self.view(embeddings)
        nearest = self._head.distances(embeddings).min(axis=1)
        if self.out_of_support is None:
            return [None] * len(nearest), [float(d) for d in nearest]
        flags, _ = out_of_support(self._head, float(self.out_of_support["threshold"]), embeddings)
        return [bool(f) for f in flags], [float(d) for d in nearest]

    @property
    def scorer(self) -> Head:
        """The fitted head (logits, gradients, distances)."""
        return self._head


def new_adapter(*, name: str | None, model: str, version: int, embeddings: np.ndarray, labels: list[str],
                distance: str, temperature: float, groups: list[int] | None = None, augmentation: str | None = None,
                bundle_sha256: str | None = None, head: str = "auto", parts: dict | None = None) -> Adapter:
    """Fit and choose a head on support embeddings (rows of one source image share a `groups` id).

    `parts` (the bundle's `embedding.parts`: name -> [start, stop)) are candidates before the whole embedding:
    each gets its own head, and the best leave-one-out accuracy wins, the earlier on a tie (a part is the
    sharper tool; the whole embedding, every part at once, is the hedge). With one shot per class nothing can be
    left out, and the whole embedding is kept."""
    classes = list(dict.fromkeys(labels))  # first-seen order, as heads.prototypes gives them
    y = np.asarray([classes.index(label) for label in labels])
    groups_arr = np.arange(len(labels)) if groups is None else np.asarray(groups)
    heads = HEADS if head == "auto" else (head,)
    candidates = {**{k: list(v) for k, v in (parts or {}).items()}, None: None}
    views = {k: embeddings if span is None else embeddings[:, slice(*span)] for k, span in candidates.items()}
    selections = {k: select_head(view, y, len(classes), groups=groups_arr, heads=heads, distance=distance,
                                 temperature=temperature) for k, view in views.items()}
    accuracies = {k or "whole": sel.accuracy for k, sel in selections.items()}
    scored = [k for k, sel in selections.items() if sel.accuracy is not None]
    part = max(scored, key=lambda k: selections[k].accuracy) if scored else None  # max keeps the first of a tie
    chosen = selections[part]
    _, protos = prototypes(views[part], labels)
    record = chosen.record
    if parts:
        record = {**record, "embedding_part": {
            "chosen": part or "whole", "accuracy": accuracies,
            "why": "best leave-one-out accuracy of its own best head (a tie: the earlier, a part before the whole)"
            if scored
            else "one shot per class leaves nothing out: the whole embedding"}}
    fitted = chosen.head
    shots = {c: len({int(g) for g, lab in zip(groups_arr, labels, strict=True) if lab == c}) for c in classes}
    return Adapter(
        id=secrets.token_urlsafe(16), name=name, model=model, version=version, classes=classes, shots=shots,
        distance=distance, temperature=temperature, loo_accuracy=chosen.accuracy,
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        prototypes=protos, head=fitted.kind,
        head_arrays={} if fitted.kind == PROTOTYPE else dict(fitted.arrays),
        head_params={} if fitted.kind == PROTOTYPE else dict(fitted.params),
        selection=record, out_of_support=chosen.threshold, augmentation=augmentation,
        bundle_sha256=bundle_sha256, embedding_part=part, embedding_slice=candidates[part],
    )


def _json_array(obj: object) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8)


def parts(adapter: Adapter) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """(meta without the head name, header, arrays): what every serialisation of an adapter holds."""
    meta = adapter.meta()
    head = meta.pop("head")
    arrays = {"prototypes": adapter.prototypes.astype(np.float32)}
    arrays.update({f"{_HEAD_PREFIX}{k}": np.asarray(v, dtype=np.float32) for k, v in adapter.head_arrays.items()})
    if adapter.embedding_slice is None:  # format 2 says all of it
        return {k: v for k, v in meta.items() if k not in _PART_FIELDS}, {"format": 2, "head": head}, arrays
    return meta, {"format": ADAPTER_FORMAT, "head": head}, arrays


def from_parts(meta: dict, header: dict, arrays: dict[str, np.ndarray], expected_id: str | None) -> Adapter:
    """The adapter these parts describe, checked; ValueError on anything that does not fit."""
    if not isinstance(header.get("format"), int) or header["format"] > ADAPTER_FORMAT:
        raise ValueError(f"adapter format {header.get('format')!r} is newer than this server's {ADAPTER_FORMAT}")
    if header.get("head") not in HEADS:
        raise ValueError(f"adapter head {header.get('head')!r} is not one of {HEADS}")
    if "prototypes" not in arrays:
        raise ValueError("adapter without prototypes")
    protos = np.asarray(arrays["prototypes"], dtype=np.float32)
    head_arrays = {k[len(_HEAD_PREFIX):]: np.asarray(v, dtype=np.float32) for k, v in arrays.items()
                   if k.startswith(_HEAD_PREFIX)}
    if not isinstance(meta, dict) or set(meta) & {"head", *_ARRAY_FIELDS}:
        raise ValueError("adapter metadata is not a JSON object of plain fields")
    adapter = Adapter(**meta, prototypes=protos, head=header["head"], head_arrays=head_arrays)
    if expected_id is not None and adapter.id != expected_id:
        raise ValueError(f"adapter id {adapter.id!r} does not match its key {expected_id!r}")
    if not ADAPTER_ID.match(adapter.id):
        raise ValueError(f"adapter id {adapter.id!r} is not a server-made id")
    if protos.ndim != 2 or protos.shape[0] != len(adapter.classes) or not np.isfinite(protos).all():
        raise ValueError(f"prototypes of shape {protos.shape} do not fit {len(adapter.classes)} classes")
    if adapter.scorer.dim != protos.shape[1]:
        raise ValueError(f"a head of dimension {adapter.scorer.dim} for embeddings of {protos.shape[1]}")
    span = adapter.embedding_slice
    if span is not None and not (isinstance(span, list) and len(span) == 2 and all(type(v) is int for v in span)
                                 and 0 <= span[0] < span[1] and span[1] - span[0] == adapter.scorer.dim
                                 and isinstance(adapter.embedding_part, str)):
        raise ValueError(f"embedding part {adapter.embedding_part!r} at {span!r} does not fit a head of dimension "
                         f"{adapter.scorer.dim}")
    return adapter


def encode(adapter: Adapter) -> bytes:
    meta, header, arrays = parts(adapter)
    buf = io.BytesIO()
    np.savez(buf, meta=_json_array(meta), header=_json_array(header), **arrays)
    return buf.getvalue()


def decode(payload: bytes, expected_id: str) -> Adapter:
    """The adapter in `payload`, checked; ValueError (or a numpy/zip error) on any damage."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes().decode("utf-8"))
        header = (json.loads(data["header"].tobytes().decode("utf-8")) if "header" in data.files
                  else {"format": 1, "head": PROTOTYPE})
        arrays = {k: np.asarray(data[k]) for k in data.files if k not in ("meta", "header")}
    return from_parts(meta, header, arrays, expected_id)
