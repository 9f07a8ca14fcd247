"""The manifest as a typed model: what `manifest.json` must hold, and which graphs each task carries.

Format history (FORMAT_VERSION is what exporters write; every SUPPORTED_FORMATS version is read):
- 1: the first format. An embedding bundle may carry a `gradcam.onnx` (the exporter traced one for
  any task); readers accept it and ignore it, since a Grad-CAM needs class logits.
- 2: a bundle carries exactly the graphs its task needs (TASKS); no string in the manifest is an
  absolute path (data are named by dataset and relative path); new optional fields
  `pixel_size_um`, `embedding.stages`/`pooling`/`description` and a graph's `quantization`; later, still
  format 2 (readers that predate it keep it as an unknown field): a classification bundle's optional
  `out_of_distribution`, the score and threshold of its out-of-distribution flag (ood.py).
  Later still: a classify graph's optional `test_time_augmentation`, the flips it averages over.
Fields not named here (metrics, split, recipe, training, ...) are free-form and kept as they are.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from .layout import MAX_VERSION, NAME_PATTERN, SHA256_RE
from .ood import SCORES

FORMAT_VERSION = 2
SUPPORTED_FORMATS = (1, 2)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
DISTANCES = ("squared_euclidean", "euclidean", "cosine")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8", "int8")
GRADCAM_INPUTS = ("features", "target_class")
GRADCAM_OUTPUTS = ("gradcam",)
FLIPS = ("identity", "hflip", "vflip", "rot180")  # flips of an NCHW image: along W, along H, both
_ABSOLUTE = re.compile(r"^(/|[A-Za-z]:[\\/])\S*$")  # a POSIX or Windows absolute path, no spaces


@dataclass(frozen=True)
class Task:
    """What a task's bundle carries: its graphs (`required` ones must be there) and the classify outputs."""

    classify_outputs: tuple[str, ...]
    graphs: tuple[str, ...]
    required: tuple[str, ...]
    min_classes: int
    optional_outputs: tuple[str, ...] = ()  # classify outputs a bundle of the task may add


TASKS: dict[str, Task] = {
    "classification": Task(("probabilities", "logits", "embedding", "features"), ("classify", "gradcam"),
                           ("classify",), min_classes=2),
    # pool_weights (batch, 1, h, w): the weights some blocks of the embedding pooled `features` with (sum-normalised
    # per image by the reader), so that an adapter's Grad-CAM differentiates through those blocks too
    "embedding": Task(("embedding", "features"), ("classify",), ("classify",), min_classes=1,
                      optional_outputs=("pool_weights",)),
}

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dtype: Literal[DTYPES]  # type: ignore[valid-type]
    dims: list[StrictInt]  # -1: dynamic

    @field_validator("dims")
    @classmethod
    def _dims(cls, dims: list[int]) -> list[int]:
        if any(d < -1 or d == 0 for d in dims):
            raise ValueError(f"dims {dims} must be positive sizes or -1 (dynamic)")
        return dims


class Tolerance(BaseModel):
    """How far a quantized graph may drift from its fp32 source, measured on real images."""

    model_config = ConfigDict(extra="allow", frozen=True)
    probabilities_max_abs: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    top1_agreement_min: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    gradcam_max_abs: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    # embedding bundles: the least cosine similarity between the copy's embedding and its source's
    embedding_cosine_min: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _some(self) -> Tolerance:
        if all(v is None for v in (self.probabilities_max_abs, self.top1_agreement_min, self.gradcam_max_abs,
                                   self.embedding_cosine_min)):
            raise ValueError("a tolerance must bound at least one of probabilities_max_abs, top1_agreement_min, "
                             "gradcam_max_abs, embedding_cosine_min")
        return self

    def broken_by(self, measured: dict[str, float]) -> list[str]:
        """The bounds that `measured` (probabilities_max_abs, top1_agreement, ...) breaks; [] when within."""
        broken = []
        if self.probabilities_max_abs is not None and measured.get("probabilities_max_abs", 0.0) > self.probabilities_max_abs:
            broken.append("probabilities_max_abs")
        if self.gradcam_max_abs is not None and measured.get("gradcam_max_abs", 0.0) > self.gradcam_max_abs:
            broken.append("gradcam_max_abs")
        if self.top1_agreement_min is not None and measured.get("top1_agreement", 1.0) < self.top1_agreement_min:
            broken.append("top1_agreement_min")
        if self.embedding_cosine_min is not None and measured.get("embedding_cosine_min", 1.0) < self.embedding_cosine_min:
            broken.append("embedding_cosine_min")
        return broken


class Quantization(_Model):
    """A graph that is a quantized copy of an fp32 graph, with the tolerance it was accepted under."""

    precision: Literal["int8", "uint8", "float16"]
    source: str  # "<name>/<version>" of the fp32 bundle (or "model.onnx" in this one)
    source_sha256: str | None = None
    method: str
    tolerance: Tolerance
    # probabilities_max_abs, gradcam_max_abs, top1_agreement (and anything else measured), on held-out images
    measured: dict[str, FiniteFloat] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _within(self) -> Quantization:
        if broken := self.tolerance.broken_by(self.measured):
            raise ValueError(f"measured {self.measured} breaks the stated tolerance on {broken}")
        return self


class TestTimeAugmentation(_Model):
    """A classify graph that runs each image in several flips of it and averages what comes out.

    `probabilities`, `logits` and `embedding` are means over `views`; `features` (what Grad-CAM explains) stay
    those of the first view, the image as sent. The graph costs len(views) times the single-view one.
    """

    views: list[Literal[FLIPS]] = Field(min_length=2)  # type: ignore[valid-type]
    chosen_on: str | None = None  # the split that picked the views, never the test split
    selection: dict[str, FiniteFloat] = Field(default_factory=dict)  # each candidate's score there
    source: str | None = None  # "<name>/<version>" of the single-view bundle
    # the copy's outputs against the source's outputs averaged over the same views
    measured: dict[str, FiniteFloat] = Field(default_factory=dict)

    @field_validator("views")
    @classmethod
    def _identity_first(cls, views: list[str]) -> list[str]:
        if views[0] != "identity" or len(set(views)) != len(views):
            raise ValueError(f"views must start with 'identity' and not repeat, got {views}")
        return views


class Graph(_Model):
    file: str
    inputs: dict[str, TensorSpec] = Field(min_length=1)
    outputs: dict[str, TensorSpec] = Field(min_length=1)
    quantization: Quantization | None = None
    test_time_augmentation: TestTimeAugmentation | None = None


class InputSpec(_Model):
    name: Literal["image"] = "image"
    dtype: Literal["float32"] = "float32"
    dims: list[StrictInt]
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"

    @field_validator("dims")
    @classmethod
    def _dims(cls, dims: list[int]) -> list[int]:
        if len(dims) != 3 or dims[0] != 3 or min(dims) <= 0:
            raise ValueError(f"input.dims must be [3, H, W] with positive sizes, got {dims}")
        return dims


class Preprocessing(_Model):
    resize: list[StrictInt] | None = None  # [H, W]; None: the input dims
    interpolation: Literal[INTERPOLATIONS] = "bilinear"  # type: ignore[valid-type]
    scale: PositiveFloat = 1 / 255
    mean: list[FiniteFloat] = Field(min_length=3, max_length=3)
    std: list[FiniteFloat] = Field(min_length=3, max_length=3)

    @field_validator("std")
    @classmethod
    def _std(cls, std: list[float]) -> list[float]:
        if min(std) <= 0:
            raise ValueError("std must be positive")
        return std


class Embedding(_Model):
    """The `embedding` output: its size, the metric prototypes use, and how it was built."""

    dim: StrictInt | None = Field(None, gt=0)
    distance: Literal[DISTANCES] = "squared_euclidean"  # type: ignore[valid-type]
    temperature: PositiveFloat = 1.0
    stages: list[str] | None = None  # layers pooled into it, in order (one: the last feature map)
    pooling: str | None = None  # e.g. "mean" or "mean+concat"
    description: str | None = None
    # named [start, stop) slices that each stand as an embedding; /adapt chooses one per support set
    parts: dict[str, Annotated[list[StrictInt], Field(min_length=2, max_length=2)]] | None = None

    @model_validator(mode="after")
    def _parts(self) -> Embedding:
        for name, (start, stop) in (self.parts or {}).items():
            if not 0 <= start < stop or (self.dim is not None and stop > self.dim):
                raise ValueError(f"embedding.parts.{name} [{start}, {stop}) is not a slice of a {self.dim}-value embedding")
        return self


class PixelSize(_Model):
    """Physical size of one pixel of the network input (after `preprocessing.resize`), in micrometres.

    What whole-slide tiling needs to cut tiles at the scale the network was trained at.
    `estimated` says the value comes from the dataset's magnification, not from the scanner.
    """

    x: PositiveFloat
    y: PositiveFloat
    estimated: StrictBool
    source: str


class OutOfDistribution(_Model):
    """A classification bundle's "unlike the training data" flag: `score` of the logits above `threshold`.

    The threshold flags `flag_rate` of the images it was calibrated on (`calibrated_on`, the run's
    validation split); `val_flag_rate` is the fraction it did flag there. See ood.py for the score.
    """

    score: Literal[SCORES]  # type: ignore[valid-type]
    temperature: PositiveFloat = 1.0  # of the score (energy: -T logsumexp(logits / T)), not the calibration's
    threshold: FiniteFloat
    flag_rate: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
    calibrated_on: str = "val"
    val_images: Annotated[StrictInt, Field(ge=1)]
    val_flag_rate: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    calibration: str | None = None  # in words


class Manifest(_Model):
    format_version: StrictInt
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    version: Annotated[StrictInt, Field(ge=1, le=MAX_VERSION)]
    task: Literal[tuple(TASKS)]  # type: ignore[valid-type]
    architecture: str
    model_args: dict[str, Any] = Field(default_factory=dict)
    classes: list[Annotated[str, Field(min_length=1)]]
    input: InputSpec
    preprocessing: Preprocessing
    temperature: PositiveFloat
    embedding: Embedding = Field(default_factory=Embedding)
    graphs: dict[str, Graph]
    files: dict[str, str] = Field(min_length=1)
    opset: StrictInt | None = Field(None, ge=18)
    exported_at: str | None = None
    pixel_size_um: PixelSize | None = None
    out_of_distribution: OutOfDistribution | None = None

    @field_validator("format_version")
    @classmethod
    def _format(cls, v: int) -> int:
        if v not in SUPPORTED_FORMATS:
            raise ValueError(f"format_version {v!r} is not one of {SUPPORTED_FORMATS}")
        return v

    @field_validator("files")
    @classmethod
    def _hashes(cls, files: dict[str, str]) -> dict[str, str]:
        bad = [k for k, v in files.items() if not SHA256_RE.match(v)]
        if bad:
            raise ValueError(f"sha256 of {bad} must be 64 hex digits")
        return files

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input.dims[1], self.input.dims[2]

    @property
    def task_spec(self) -> Task:
        return TASKS[self.task]

    def served_graphs(self) -> dict[str, Graph]:
        """The graphs a reader uses: those of the task (a format-1 embedding bundle's gradcam is ignored)."""
        return {k: g for k, g in self.graphs.items() if k in self.task_spec.graphs}

    @model_validator(mode="after")
    def _contract(self) -> Manifest:
        check_contract(self)
        return self


def _absolute_paths(obj: Any, where: str = "") -> list[str]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _absolute_paths(v, f"{where}.{k}" if where else str(k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _absolute_paths(v, f"{where}[{i}]")]
    return [where] if isinstance(obj, str) and _ABSOLUTE.match(obj) else []


def check_contract(m: Manifest) -> None:
    """The rules across fields: classes, graphs per task, tensor names and dims, files, portability."""
    task = m.task_spec
    if len(m.classes) < task.min_classes:
        raise ValueError(f"a {m.task} bundle needs at least {task.min_classes} classes, got {len(m.classes)}")
    if len(set(m.classes)) != len(m.classes):
        raise ValueError("classes must be unique")
    h, w = m.input_size
    if m.preprocessing.resize is not None and list(m.preprocessing.resize) != [h, w]:
        raise ValueError(f"preprocessing.resize {m.preprocessing.resize} differs from input dims {[h, w]}")
    allowed = set(task.graphs) | ({"gradcam"} if m.format_version == 1 else set())
    unknown = sorted(set(m.graphs) - allowed)
    if unknown:
        raise ValueError(f"a {m.task} bundle carries graphs {sorted(task.graphs)}, not {unknown}")
    missing = [g for g in task.required if g not in m.graphs]
    if missing:
        raise ValueError(f"graphs.{missing[0]} is missing")
    for key, graph in m.graphs.items():
        if graph.file not in m.files:
            raise ValueError(f"graphs.{key}.file {graph.file!r} is not among the bundle files")
        if graph.test_time_augmentation is not None and key != "classify":
            raise ValueError(f"graphs.{key}.test_time_augmentation: only the classify graph averages views")
    classify = m.graphs["classify"]
    if list(classify.inputs) != ["image"] or classify.inputs["image"].dims != [-1, *m.input.dims]:
        raise ValueError(f"graphs.classify.inputs must be exactly image [-1, {', '.join(map(str, m.input.dims))}]")
    outputs = classify.outputs
    if sorted(set(outputs) - set(task.optional_outputs)) != sorted(task.classify_outputs):
        optional = f" (and optionally {list(task.optional_outputs)})" if task.optional_outputs else ""
        raise ValueError(f"graphs.classify.outputs for task {m.task!r} must be {list(task.classify_outputs)}"
                         f"{optional}, got {sorted(outputs)}")
    if m.task == "classification":
        for out in ("probabilities", "logits"):
            if outputs[out].dims != [-1, len(m.classes)]:
                raise ValueError(f"{out} has {outputs[out].dims[-1]} columns for {len(m.classes)} classes")
    features = outputs["features"].dims
    if len(features) != 4 or len(outputs["embedding"].dims) != 2:
        raise ValueError("features must be [batch, C, h, w] and embedding [batch, D]")
    if m.embedding.dim is not None and outputs["embedding"].dims[1] not in (-1, m.embedding.dim):
        raise ValueError(f"embedding.dim {m.embedding.dim} differs from the embedding output {outputs['embedding'].dims}")
    if "pool_weights" in outputs and outputs["pool_weights"].dims != [features[0], 1, *features[2:]]:
        raise ValueError(f"pool_weights dims {outputs['pool_weights'].dims} are not [batch, 1, h, w] of features {features}")
    if "gradcam" in m.graphs:
        cam = m.graphs["gradcam"]
        if sorted(cam.inputs) != sorted(GRADCAM_INPUTS) or list(cam.outputs) != list(GRADCAM_OUTPUTS):
            raise ValueError(f"graphs.gradcam must map {list(GRADCAM_INPUTS)} -> {list(GRADCAM_OUTPUTS)}")
        if cam.inputs["features"].dims != features:
            raise ValueError("graphs.gradcam features dims differ from the classify graph's features")
        if cam.inputs["target_class"].dtype != "int64":
            raise ValueError("graphs.gradcam target_class must be int64")
        if cam.outputs["gradcam"].dims != [-1, h, w]:
            raise ValueError(f"graphs.gradcam output dims {cam.outputs['gradcam'].dims} are not [-1, {h}, {w}]")
    if m.out_of_distribution is not None and m.task != "classification":
        raise ValueError(f"out_of_distribution scores class logits: a {m.task} bundle has none")
    if m.format_version >= 2:
        absolute = _absolute_paths(m.model_dump(mode="json"))
        if absolute:
            raise ValueError(f"absolute paths in {absolute[:5]}: record dataset names and relative paths")
