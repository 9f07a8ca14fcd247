"""Response models: what each route answers, so that the OpenAPI schema documents the answers too.

The routers declare them with `response_model=`; FastAPI then validates the handler's dict and
serialises it with pydantic (its fast path) instead of `jsonable_encoder`. The JSON shapes are
the ones the routes have always returned: field names and nesting here follow the handlers.

Every answer model allows extra keys: the dicts come from modules that grow (`describe()`,
`Adapter.meta()`, readiness), and a field added there must reach the client rather than be
dropped silently here. Declare it below to document it.
"""
from __future__ import annotations

from typing import Any

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


# --- classification


class ClassProbability(Answer):
    label: str
    probability: float


class ImageResult(Answer):
    filename: str | None = Field(description="the uploaded file's name")
    label: str = Field(description="the most probable class")
    score: float = Field(description="its probability")
    top_k: list[ClassProbability] = Field(description="the most probable classes, best first")


class AdapterRef(Answer):
    id: str
    name: str | None


class ClassifyResponse(Answer):
    model: str
    version: int
    adapter: AdapterRef | None = Field(description="the adapter used, or null for the bundle's own classifier")
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
