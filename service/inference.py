"""What the endpoints compute from a loaded model: class scores, adapter scores, embeddings, Grad-CAM.

Decoding and resizing run in worker threads: a large upload must not stall the event loop
that every other request shares.
"""
from __future__ import annotations

import asyncio
import io

import numpy as np
from fastapi import UploadFile
from PIL import Image

from .adapters import Adapter
from .errors import ServiceError
from .imaging import decode_image, encode_png, preprocess
from .registry import LoadedModel


async def read_image(upload: UploadFile, max_pixels: int) -> Image.Image:
    data = await upload.read()
    return await asyncio.to_thread(decode_image, data, max_pixels=max_pixels, filename=upload.filename or "upload")


async def read_images(uploads: list[UploadFile], max_pixels: int) -> list[Image.Image]:
    return [await read_image(u, max_pixels) for u in uploads]


async def tensors(model: LoadedModel, images: list[Image.Image]) -> list[np.ndarray]:
    pre = model.bundle.preprocessing
    return await asyncio.to_thread(lambda: [preprocess(img, pre) for img in images])


def _result(probabilities: np.ndarray, classes: list[str], top_k: int) -> dict:
    order = np.argsort(-probabilities, kind="stable")[: min(top_k, len(classes))]
    best = int(order[0])
    return {"label": classes[best], "score": float(probabilities[best]),
            "top_k": [{"label": classes[int(i)], "probability": float(probabilities[int(i)])} for i in order]}


async def classify(model: LoadedModel, images: list[Image.Image], top_k: int) -> list[dict]:
    outputs = await model.infer(await tensors(model, images))
    classes = list(model.bundle.classes)
    return [_result(out["probabilities"], classes, top_k) for out in outputs]


async def embed(model: LoadedModel, images: list[Image.Image], chunk: int) -> np.ndarray:
    """(N, D) embeddings; submitted in chunks so that a large support set never floods the queue."""
    rows: list[np.ndarray] = []
    for start in range(0, len(images), chunk):
        outputs = await model.infer(await tensors(model, images[start : start + chunk]))
        rows.extend(out["embedding"] for out in outputs)
    return np.stack(rows).astype(np.float32)


async def classify_with_adapter(model: LoadedModel, adapter: Adapter, images: list[Image.Image],
                                top_k: int) -> list[dict]:
    embeddings = await embed(model, images, chunk=len(images))
    probabilities = adapter.classify(embeddings)
    return [_result(p, adapter.classes, top_k) for p in probabilities]


async def gradcam(model: LoadedModel, image: Image.Image, target: str | None) -> dict:
    """Predicted class, target class and the (H, W) map of gradcam.onnx run on model.onnx's features."""
    bundle = model.bundle
    if model.runtime.gradcam_session is None:
        raise ServiceError(422, "gradcam_unavailable", f"{bundle.ref} has no gradcam graph; "
                           "choose a model whose /models entry says gradcam: true")
    if bundle.task != "classification":
        raise ServiceError(422, "gradcam_unavailable", f"{bundle.ref} is an embedding bundle without classes")
    classes = list(bundle.classes)
    if target is not None and target not in classes:
        raise ServiceError(422, "unknown_target", f"target {target!r} is not a class of {bundle.ref}",
                           {"valid_targets": classes})
    (out,) = await model.infer(await tensors(model, [image]))
    predicted = int(np.argmax(out["probabilities"]))
    target_index = classes.index(target) if target is not None else predicted
    maps = await asyncio.to_thread(model.runtime.gradcam, out["features"][None],
                                   np.asarray([target_index], dtype=np.int64))
    return {"label": classes[predicted], "score": float(out["probabilities"][predicted]),
            "target": classes[target_index], "map": maps[0]}


def map_png(heatmap: np.ndarray) -> bytes:
    """The map as an 8-bit grayscale PNG at its own size (value = round(255 * map))."""
    return encode_png(Image.fromarray(map_to_uint8(heatmap)))


def map_to_uint8(heatmap: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.nan_to_num(heatmap) * 255.0), 0, 255).astype(np.uint8)


def _colormap(values: np.ndarray) -> np.ndarray:
    """A jet-like colour ramp, blue (0) -> red (1), without a plotting library."""
    x = values[..., None]
    ramps = np.concatenate([1.5 - np.abs(4 * x - 3), 1.5 - np.abs(4 * x - 2), 1.5 - np.abs(4 * x - 1)], axis=-1)
    return (np.clip(ramps, 0, 1) * 255).astype(np.uint8)


def overlay_png(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> bytes:
    """The map resized to the input image and blended over it, as a PNG the input's size."""
    gray = Image.fromarray(map_to_uint8(heatmap)).resize(image.size, Image.Resampling.BILINEAR)
    colour = Image.fromarray(_colormap(np.asarray(gray, dtype=np.float32) / 255.0))
    buf = io.BytesIO()
    Image.blend(image.convert("RGB"), colour, alpha).save(buf, format="PNG")
    return buf.getvalue()
