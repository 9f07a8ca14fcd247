"""What is loaded: bundles, their classes, input size, metrics and the provider each runs on."""
from __future__ import annotations

from fastapi import APIRouter

from ..deps import RegistryDep
from ..errors import ServiceError
from ..schemas import ModelInfo, ModelList, ModelWithVersions, error_responses

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=ModelList)
async def list_models(registry: RegistryDep) -> dict:
    """Every loaded bundle, and the bundles refused at start-up with the reason."""
    return {"models": [m.describe() for m in registry.models.values()], "refused": registry.refused,
            "defaults": registry.defaults()}


@router.get("/{name}", response_model=ModelWithVersions, responses=error_responses(404, 422))
async def get_model(name: str, registry: RegistryDep) -> dict:
    """The highest loaded version of a model, with the versions loaded."""
    versions = registry.versions(name)
    if not versions:
        raise ServiceError(404, "model_not_found", f"model {name!r} is not loaded", {"loaded": registry.refs()})
    return {**versions[-1].describe(), "versions": [m.bundle.version for m in versions]}


@router.get("/{name}/{version}", response_model=ModelInfo, responses=error_responses(404, 422))
async def get_model_version(name: str, version: str, registry: RegistryDep) -> dict:
    """One version of a model."""
    return registry.resolve(f"{name}/{version}").describe()
