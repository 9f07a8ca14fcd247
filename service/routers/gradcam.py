"""POST /gradcam: where the model looked, from the bundle's own Grad-CAM graph, or for an adapter's class
from the embedding bundle's last feature map (closed-form gradient of the adapter head, in numpy)."""
from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from .. import inference
from ..deps import AdaptersDep, Multipart, RegistryDep, SettingsDep, adapter_or_404
from ..errors import ServiceError
from ..schemas import GradcamResponse, error_responses

router = APIRouter(tags=["gradcam"])


@router.post("/gradcam", dependencies=[Multipart], response_model=None,
             responses={200: {"model": GradcamResponse, "content": {"image/png": {}},
                        "description": "JSON with the map as a PNG; the blended overlay PNG with Accept: image/png"},
                        **error_responses(404, 413, 415, 422, 503)})
async def gradcam(
    request: Request, registry: RegistryDep, adapters: AdaptersDep, settings: SettingsDep,
    file: Annotated[UploadFile, File(description="one image")],
    model: Annotated[str | None, Form(description="name or name/version; the default model otherwise")] = None,
    target: Annotated[str | None, Form(description="class to explain; the predicted class otherwise")] = None,
    adapter: Annotated[str | None, Form(description="explain this adapter's class instead of the model's")] = None,
) -> Response | dict:
    """Grad-CAM heatmap for one image: PNG overlay with Accept: image/png, JSON otherwise."""
    if adapter is not None:
        chosen = adapter_or_404(adapters, adapter)
        loaded = inference.adapter_model(registry, chosen)
        if model is not None and model not in (chosen.model, loaded.bundle.ref):
            raise ServiceError(422, "model_mismatch", f"adapter {adapter} was built on {loaded.bundle.ref}, not {model}")
    else:
        chosen, loaded = None, registry.classifier(model)
    image = await inference.read_image(file, settings.max_image_pixels)
    if chosen is None:
        result = await inference.gradcam(loaded, image, target)
    else:
        result = await inference.adapter_gradcam(loaded, chosen, image, target)
    if "image/png" in request.headers.get("accept", ""):
        return Response(inference.overlay_png(image, result["map"]), media_type="image/png")
    heatmap = result["map"]
    body = {"model": loaded.bundle.name, "version": loaded.bundle.version, "label": result["label"],
            "score": result["score"], "target": result["target"],
            "map_size": [int(heatmap.shape[0]), int(heatmap.shape[1])], "image_size": [image.height, image.width],
            "heatmap_png": base64.b64encode(inference.map_png(heatmap)).decode("ascii")}
    if chosen is not None:  # additive: which adapter, which part of the embedding, and the out-of-support flag
        body.update({"adapter": {"id": chosen.id, "name": chosen.name}, "explained": result["explained"],
                     "out_of_support": result["out_of_support"], "support_distance": result["support_distance"]})
    return body
