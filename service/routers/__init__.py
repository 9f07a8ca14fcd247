"""One router per resource; `api_router` gathers them for the app factory."""
from fastapi import APIRouter

from . import adapt, classify, gradcam, health, models

api_router = APIRouter()
for module in (classify, models, adapt, gradcam, health):
    api_router.include_router(module.router)
