"""Response models: what each route answers, so that the OpenAPI schema documents the answers too.

The routers declare them with `response_model=`; FastAPI then validates the handler's dict and
serialises it with pydantic (its fast path) instead of `jsonable_encoder`. The JSON shapes are
the ones the routes have always returned: field names and nesting here follow the handlers.

Every answer model allows extra keys: the dicts come from modules that grow (`describe()`,
`Adapter.meta()`, readiness), and a field added there must reach the client rather than be
dropped silently here. Declare it below to document it.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    """Base of every response model: documented fields, and extra ones passed through."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

# --- errors (errors.py renders every 4xx/5xx in this shape)


class ErrorDetail(Answer):
    status: int = Field(description="the HTTP status, repeated")
    code: str = Field(description="a short stable word clients can branch on")
    message: str = Field(description="what went wrong, for a person")
    detail: Any = Field(None, description="structured context, when there is any")


class ErrorResponse(Answer):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting the error shape for the given statuses."""
    return {status: {"model": ErrorResponse} for status in statuses}


def _absent(value: Any) -> bool:
    return value is None


# Optional fields a route adds only in some answers: documented here, left out of the JSON when not given
# (rather than sent as null), so that answers without them stay as they were.
OMITTED = {"default": None, "exclude_if": _absent}


# --- classification


class Rescaled(Answer):
    """What a request's `mpp` did to one image before the usual preprocessing."""

    from_mpp: float = Field(description="um per pixel of the upload, as the request gave it")
    to_um: list[float] = Field(description="[x, y] um per network-input pixel of the model")
    size: list[int] = Field(description="[width, height] of the upload resized to the model's pixel size")
    crop: list[int] = Field(description="[left, top, width, height] of the network input cut from its centre")
    estimated: bool = Field(description="whether the model's pixel size is an estimate")
    source: str = Field(description="where the model's pixel size comes from")


class ClassProbability(Answer):
    label: str
    probability: float


class ImageResult(Answer):
    filename: str | None = Field(description="the uploaded file's name")
    label: str = Field(description="the most probable class")
    score: float = Field(description="its probability")
    top_k: list[ClassProbability] = Field(description="the most probable classes, best first")
    rescaled: Rescaled | None = Field(**OMITTED, description="only with `mpp`: how the image was rescaled")
    out_of_distribution: bool | None = Field(
        **OMITTED, description="only for a model whose manifest calibrates `out_of_distribution`: true when the "
        "image is unlike the model's training data: its ood_score is above the threshold calibrated on "
        "validation, or less than a tenth of it is tissue (glass, background)")
    ood_score: float | None = Field(
        **OMITTED, description="with out_of_distribution: the score (the manifest names it; energy: "
        "-logsumexp(logits), higher is further from the training data)")
    tissue_fraction: float | None = Field(
        **OMITTED, description="with out_of_distribution: the share of the network input that is tissue "
        "(HSV saturation, the rule slide jobs use to skip glass)")


class AdapterRef(Answer):
    id: str
    name: str | None


class ClassifyResponse(Answer):
    model: str
    version: int
    adapter: AdapterRef | None = Field(description="the adapter used, or null for the bundle's own classifier")
    tta: Literal["none", "dihedral"] = Field("none", description="test-time augmentation applied")
    results: list[ImageResult] = Field(description="one per uploaded image, in upload order")


class GradcamResponse(Answer):
    model: str
    version: int
    label: str = Field(description="the predicted class")
    score: float = Field(description="its probability")
    target: str = Field(description="the class the map explains")
    map_size: list[int] = Field(description="[height, width] of the map")
    image_size: list[int] = Field(description="[height, width] of the uploaded image")
    heatmap_png: str = Field(description="base64 8-bit grayscale PNG of the map at map_size (255 = 1.0)")


# --- models


class Preprocessing(Answer):
    resize: list[int]
    interpolation: str
    mean: list[float]
    std: list[float]


class EmbeddingInfo(Answer):
    distance: str
    temperature: float


class ModelInfo(Answer):
    name: str
    version: int
    task: str = Field(description="classification or embedding")
    architecture: str | None
    classes: list[str]
    input_size: list[int]
    preprocessing: Preprocessing
    temperature: float
    embedding: EmbeddingInfo | None = Field(description="null for a bundle without an embedding output")
    gradcam: bool = Field(description="whether POST /gradcam works with this bundle")
    metrics: dict[str, Any]
    split: Any = None
    recipe: Any = None
    exported_at: str | None = None
    provider: str = Field(description="the execution provider the model really runs on")
    providers: list[str]


class ModelWithVersions(ModelInfo):
    versions: list[int] = Field(description="every loaded version of this model")


class ModelList(Answer):
    models: list[ModelInfo]
    refused: dict[str, str] = Field(description="bundle path -> why it was refused at start-up")
    defaults: dict[str, str | None] = Field(
        default_factory=dict, description="name/version that /classify ('classification') and /adapt ('embedding') "
                                          "use when a request names no model; null when none is loaded")


# --- adapters


class AdapterInfo(Answer):
    id: str
    name: str | None
    model: str = Field(description="the embedding bundle it was built on")
    version: int
    classes: list[str]
    shots: dict[str, int] = Field(description="support images per class")
    distance: str
    temperature: float
    loo_accuracy: float | None = Field(description="leave-one-out accuracy on the support set")
    created_at: str
    head: str | None = Field(None, description="how it classifies (prototype: nearest class mean)")
    embedding_part: str | None = Field(None, description=(
        "the named part of the bundle's embedding it reads, chosen on the support set (embedding.parts of its "
        "manifest); null: all of it"))
    embedding_slice: list[int] | None = Field(None, description="[start, stop) of that part in the embedding")


class SupportRescaled(Rescaled):
    filename: str | None = Field(description="the support image's file name")


class AdaptResponse(AdapterInfo):
    rescaled: list[SupportRescaled] | None = Field(
        **OMITTED, description="only with `mpp`: how each support image was rescaled, in upload order")


class AdapterList(Answer):
    adapters: list[AdapterInfo]


class Deleted(Answer):
    id: str
    deleted: bool


# --- health


class Health(Answer):
    status: str


class Readiness(Answer):
    ready: bool
    models: list[str]
    refused: dict[str, str]


# --- slides (routers/slides.py answers these with response_model_exclude_unset: each answer holds exactly the
# keys the job record gives, so optional fields below are documented without being added as nulls)


class SlideSpacing(Answer):
    width: int | None = Field(None, description="level-0 width in pixels")
    height: int | None = Field(None, description="level-0 height in pixels")
    mpp_x: float | None = Field(None, description="um per level-0 pixel in x")
    mpp_y: float | None = Field(None, description="um per level-0 pixel in y")
    mpp_source: str | None = Field(None, description="where the spacing comes from: the slide's metadata or the request")
    levels: int | None = Field(None, description="pyramid levels (in the summary)")
    format: str | None = Field(None, description="the format OpenSlide recognised (in the summary)")


class SlideProgress(Answer):
    done: int | None = Field(None, description="tiles classified so far")
    total: int | None = Field(None, description="tissue tiles to classify; null until the grid is known")


class SlideJobError(Answer):
    code: str | None = Field(None, description="a short stable word, as in error answers")
    message: str | None = Field(None, description="why the job failed")


class SlideModelResolution(Answer):
    tile_width_um: float | None = Field(None, description="what one network input covers on the glass, in x")
    tile_height_um: float | None = Field(None, description="and in y")
    estimated: bool | None = Field(None, description="whether the model's pixel size is an estimate")
    source: str | None = Field(None, description="where the model's pixel size comes from")


class SlideTiling(Answer):
    tile_width_px: int | None = Field(None, description="level-0 pixels per tile in x")
    tile_height_px: int | None = Field(None, description="level-0 pixels per tile in y")
    level: int | None = Field(None, description="the pyramid level read")
    read_width_px: int | None = Field(None, description="pixels read at that level per tile, in x")
    read_height_px: int | None = Field(None, description="and in y")
    grid: list[int] | None = Field(None, description="[columns, rows] of the full tile grid")
    tiles: int | None = Field(None, description="tiles kept (enough tissue)")


class SlideAnswer(Answer):
    label: str | None = Field(None, description="the class with the largest share of the classified tissue")
    fraction: float | None = Field(None, description="its share")
    fractions: dict[str, float] | None = Field(None, description="every class's share")
    rule: str | None = Field(None, description="how the answer was reached (not a diagnosis)")


class SlideSummary(Answer):
    slide: SlideSpacing | None = None
    model: str | None = Field(None, description="name/version, or the adapter and its bundle")
    model_resolution: SlideModelResolution | None = Field(
        None, description="null when the job gave tile_size for a model without a pixel size")
    tiling: SlideTiling | None = None
    tissue_area_mm2: float | None = None
    tiles_classified: int | None = None
    class_fractions: dict[str, float] | None = Field(None, description="share of the classified tissue per class")
    answer: SlideAnswer | None = None
    seconds: float | None = None
    tiles_per_second: float | None = None


class SlideJob(Answer):
    id: str
    status: str = Field(description="queued, running, done, failed or cancelled")
    model: str | None = Field(description="name/version of the bundle that classifies the tiles")
    adapter: str | None = Field(description="the adapter id, when one classifies")
    source: str = Field(description="upload or path")
    path: str | None = Field(description="relative to HISTOSERVE_SLIDE_ROOT, for a path job")
    mpp: float | None = Field(description="the request's mpp, overriding the slide's")
    tile_size: int | None
    level: int | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: SlideProgress
    error: SlideJobError | None = Field(description="why, once failed")
    summary: SlideSummary | None = Field(description="once done")
    slide: SlideSpacing | None = Field(description="size and pixel spacing, from the upload check on")
    instance: str = Field(description="the service instance that runs (or ran) it")


class SlideFile(Answer):
    path: str = Field(description="relative to HISTOSERVE_SLIDE_ROOT, for POST /slides `path`")
    bytes: int


class SlideFileList(Answer):
    files: list[SlideFile]


class SlideDeleted(Answer):
    id: str
    status: str = Field(description="the job's status after the call")
    cancelled: bool | None = Field(None, description="true when a queued or running job was cancelled")
    deleted: bool | None = Field(None, description="true when a finished job and its files were deleted")
