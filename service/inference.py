"""What the endpoints compute from a loaded model: class scores, adapter scores, embeddings, Grad-CAM.

Decoding and resizing run in worker threads: a large upload must not stall the event loop
that every other request shares. On the /classify hot path (`prepare`) the whole request takes
one hop: every image of it is decoded and preprocessed in one worker-thread call.
"""
from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

import numpy as np
from fastapi import UploadFile
from PIL import Image

from bundle import ood

from .adapters import Adapter
from .adapters.heads import embedding_blocks, feature_gradient
from .adapters.heads import gradcam as head_gradcam
from .errors import ServiceError
from .imaging import decode_image, encode_png, input_pixels, preprocess, rescale_to_model
from .registry import LoadedModel, ModelRegistry
from .slides.resolution import model_resolution
from .slides.tissue import MIN_TISSUE_FRACTION, TISSUE_POOL, tissue_fraction


async def read_image(upload: UploadFile, max_pixels: int) -> Image.Image:
    data = await upload.read()
    return await asyncio.to_thread(decode_image, data, max_pixels=max_pixels, filename=upload.filename or "upload")


def _inputs(blobs: list[tuple[bytes, str]], pre, max_pixels: int, rescale: Rescale | None = None,
            views: tuple = (None,)) -> tuple[list[np.ndarray], list[dict]]:
    """(bytes, filename) uploads -> input tensors, in a worker thread: decode each, rescale it to the model's
    pixel size (with `rescale`, noting what was done), preprocess it in each of `views` (transposes)."""
    x, notes = [], []
    for data, name in blobs:
        img = decode_image(data, max_pixels=max_pixels, filename=name)
        if rescale is not None:
            img, note = rescale.apply(img, name)
            notes.append(note)
        x.extend(preprocess(img if t is None else img.transpose(t), pre) for t in views)
    return x, notes


async def prepare(model: LoadedModel, uploads: list[UploadFile], max_pixels: int,
                  rescale: Rescale | None = None, views: tuple = (None,)
                  ) -> tuple[list[np.ndarray], list[dict] | None]:
    """Uploads -> the model's input tensors, bytes read here, decoding and preprocessing all of them in one
    hop; with `rescale` (images sent with `mpp`), each is first resampled to the model's pixel size and cut,
    and the notes of what was done come back beside them (None without). With `views` (`DIHEDRAL`), each
    image gives one tensor per view, in a row."""
    blobs = [(await u.read(), u.filename or "upload") for u in uploads]
    x, notes = await asyncio.to_thread(_inputs, blobs, model.bundle.preprocessing, max_pixels, rescale, views)
    return x, notes if rescale is not None else None


async def tensors(model: LoadedModel, images: list[Image.Image]) -> list[np.ndarray]:
    pre = model.bundle.preprocessing
    return await asyncio.to_thread(lambda: [preprocess(img, pre) for img in images])


# --- images sent with their pixel size (`mpp`), rescaled to the model's


@dataclass(frozen=True)
class Rescale:
    """Uploads taken at `mpp` um/px, to be resampled to the model's um per network-input pixel (x, y)."""

    mpp: float
    um_per_px: tuple[float, float]
    input_size: tuple[int, int]  # (H, W) cut from the centre of the rescaled image
    interpolation: str
    max_pixels: int
    estimated: bool
    source: str

    def apply(self, img: Image.Image, filename: str) -> tuple[Image.Image, dict]:
        out, done = rescale_to_model(img, self.mpp, self.um_per_px, self.input_size, self.interpolation,
                                     max_pixels=self.max_pixels, filename=filename)
        return out, {**done, "estimated": self.estimated, "source": self.source}


def rescale_for(model: LoadedModel, mpp: float | None, *, fallback_mpp: float | None,
                max_pixels: int) -> Rescale | None:
    """How to honour a request's `mpp` on this bundle (None without one); the model's pixel size is the one
    slide tiling uses (manifest `pixel_size_um`, else a dataset estimate, else HISTOSERVE_SLIDE_MODEL_MPP)."""
    if mpp is None:
        return None
    bundle = model.bundle
    resolution = model_resolution(bundle.manifest, tuple(bundle.input_size), fallback_mpp)
    if resolution is None:
        raise ServiceError(422, "model_resolution_unknown",
                           f"{bundle.ref} states no physical pixel size (manifest pixel_size_um) and the service has "
                           "no estimate for it, so an image's `mpp` cannot be matched to it; send the image at the "
                           "model's scale without `mpp`, or set HISTOSERVE_SLIDE_MODEL_MPP")
    height, width = bundle.preprocessing.resize
    return Rescale(mpp, (resolution.width_um / bundle.input_size[1], resolution.height_um / bundle.input_size[0]),
                   (height, width), bundle.preprocessing.interpolation, max_pixels, resolution.estimated,
                   resolution.source)


def _result(probabilities: np.ndarray, classes: list[str], top_k: int) -> dict:
    order = np.argsort(-probabilities, kind="stable")[: min(top_k, len(classes))]
    best = int(order[0])
    return {"label": classes[best], "score": float(probabilities[best]),
            "top_k": [{"label": classes[int(i)], "probability": float(probabilities[int(i)])} for i in order]}


async def classify(model: LoadedModel, x: list[np.ndarray], top_k: int, n_views: int = 1) -> list[dict]:
    """Preprocessed images (from `prepare`) -> one result per image; where the manifest calibrates an
    out-of-distribution flag, each result says whether the image is flagged, and its score. With `n_views` > 1
    (test-time augmentation), each image's `n_views` tensors are in a row: its probabilities are their mean,
    as training's TTA figures are, and its flag is read from the first (the image as sent), the view the
    threshold was calibrated on."""
    calibrated = model.bundle.spec.out_of_distribution if model.bundle.spec is not None else None
    # the energy score misses glass and background (a near-uniform answer can score like tissue), so an image
    # that is mostly not tissue, by the slide detector's rule, is flagged too: measured in a worker thread
    # while the batch runs (about 0.35 ms per image that would otherwise hold the event loop)
    pre = model.bundle.preprocessing

    as_sent = x[::n_views]

    def tissue_fractions() -> list[float]:
        return [tissue_fraction(input_pixels(t, pre, TISSUE_POOL), pool=1) for t in as_sent]

    tissue_job = asyncio.ensure_future(asyncio.to_thread(tissue_fractions)) if calibrated is not None and x else None
    outputs = await model.infer(x)
    classes = list(model.bundle.classes)
    probabilities = [out["probabilities"] for out in outputs]
    if n_views > 1:
        probabilities = [np.mean(probabilities[i : i + n_views], axis=0) for i in range(0, len(outputs), n_views)]
    results = [_result(p, classes, top_k) for p in probabilities]
    if tissue_job is not None:
        logits = np.stack([out["logits"] for out in outputs[::n_views]])
        scores = ood.score(calibrated.score, logits, calibrated.temperature)
        tissue = await tissue_job
        flags = ood.flags(scores, calibrated.threshold)
        for result, value, flag, share in zip(results, scores, flags, tissue, strict=True):
            result["out_of_distribution"] = bool(flag) or share < MIN_TISSUE_FRACTION
            result["ood_score"] = float(value)
            result["tissue_fraction"] = share
    return results


# --- few-shot adapters

DIHEDRAL = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
            Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.TRANSPOSE,
            Image.Transpose.TRANSVERSE)  # the 8 symmetries of the square; None: the image as sent


async def embed_support(model: LoadedModel, uploads: list[UploadFile], *, augment: str, max_pixels: int,
                        rescale: Rescale | None) -> tuple[np.ndarray, list[int], list[dict] | None]:
    """Support embeddings, the source image of each row, and (with `rescale`) what was done to each image.

    "dihedral" adds the 7 other views of each image. Decoding, rescaling, the views and preprocessing run
    chunk by chunk in worker threads, a chunk being at most one batch: one chunk per batch worker in flight
    and one more being prepared, so decoding overlaps inference and a large support set never floods the
    queue."""
    blobs = [(await u.read(), u.filename or "upload") for u in uploads]
    views = DIHEDRAL if augment == "dihedral" else (None,)
    per_chunk = max(1, model.batcher.max_batch_size // len(views))  # source images per chunk
    in_flight = asyncio.Semaphore(model.batcher.concurrent_batches + 1)

    async def one(part: list[tuple[bytes, str]]) -> tuple[list[np.ndarray], list[dict]]:
        async with in_flight:
            x, notes = await asyncio.to_thread(_inputs, part, model.bundle.preprocessing, max_pixels, rescale, views)
            return [out["embedding"] for out in await model.infer(x)], notes

    tasks = [asyncio.ensure_future(one(blobs[start : start + per_chunk]))
             for start in range(0, len(blobs), per_chunk)]
    try:
        chunks = await asyncio.gather(*tasks)
    except BaseException:  # a bad image (4xx) or a full queue: the other chunks stop too
        for task in tasks:
            task.cancel()
        raise
    embeddings = np.stack([row for rows, _ in chunks for row in rows]).astype(np.float32)
    notes = [note for _, part in chunks for note in part] if rescale is not None else None
    return embeddings, [i for i in range(len(blobs)) for _ in views], notes


def model_sha256(bundle) -> str | None:
    """The hash of a bundle's model.onnx as its manifest records it (checked when the bundle loaded)."""
    return bundle.manifest.get("files", {}).get(bundle.graphs["classify"]["file"])


def adapter_model(registry: ModelRegistry, adapter: Adapter) -> LoadedModel:
    """The embedding bundle an adapter was built on; a 404 naming it when it is not loaded, a 422 when the
    bundle under that name and version is not the one the adapter was built on (other hash or size)."""
    ref = f"{adapter.model}/{adapter.version}"
    loaded = registry.models.get((adapter.model, adapter.version))
    if loaded is None:
        raise ServiceError(404, "bundle_not_loaded",
                           f"adapter {adapter.id} was built on the embedding bundle {ref}, which is not loaded "
                           "here; load that bundle, or build the adapter again on a loaded one",
                           {"bundle": ref, "loaded": registry.refs()})
    sha = model_sha256(loaded.bundle)
    if adapter.bundle_sha256 is not None and sha != adapter.bundle_sha256:
        raise ServiceError(422, "bundle_mismatch",
                           f"adapter {adapter.id} was built on a different {ref} (model.onnx sha256 "
                           f"{adapter.bundle_sha256[:12]}..., loaded {str(sha)[:12]}...); build it again",
                           {"bundle": ref, "adapter_sha256": adapter.bundle_sha256, "loaded_sha256": sha})
    dim = loaded.bundle.graphs["classify"]["outputs"].get("embedding", {}).get("dims", [0, -1])[-1]
    span = adapter.embedding_slice or [0, dim]
    if dim >= 0 and (span[1] > dim or span[1] - span[0] != adapter.scorer.dim):
        raise ServiceError(422, "bundle_mismatch", f"adapter {adapter.id} holds {adapter.scorer.dim}-dimensional "
                           f"classes (embedding[{span[0]}:{span[1]}]) but {ref} embeds in {dim} dimensions; build it "
                           "again", {"bundle": ref})
    return loaded


async def classify_with_adapter(model: LoadedModel, adapter: Adapter, x: list[np.ndarray],
                                top_k: int) -> list[dict]:
    """Per preprocessed image (from `prepare`): the adapter's classes as `classify` gives them, and whether it
    lies outside the support."""
    embeddings = np.stack([out["embedding"] for out in await model.infer(x)]).astype(np.float32)
    probabilities = adapter.classify(embeddings)
    flags, nearest = adapter.outside(embeddings)
    return [{**_result(p, adapter.classes, top_k), "out_of_support": flag, "support_distance": d}
            for p, flag, d in zip(probabilities, flags, nearest, strict=True)]


async def adapter_gradcam(model: LoadedModel, adapter: Adapter, image: Image.Image, target: str | None) -> dict:
    """Grad-CAM of the adapter's class score with respect to model.onnx's last feature map, in numpy.

    The head's score gradient with respect to the embedding has a closed form (heads.Head.logit_gradient);
    through every block of the embedding that pools `features` (its spatial mean, L2-normalised or not, or
    its mean weighted by the bundle's `pool_weights`) the gradient with respect to every position of the
    feature map follows from it. Blocks from other stages of a multi-stage embedding are held fixed, and the
    answer says so."""
    bundle = model.bundle
    if "features" not in bundle.graphs["classify"]["outputs"]:
        raise ServiceError(422, "gradcam_unavailable", f"{bundle.ref} has no features output to explain")
    if target is not None and target not in adapter.classes:
        raise ServiceError(422, "unknown_target", f"target {target!r} is not a class of adapter {adapter.id}",
                           {"valid_targets": adapter.classes})
    (out,) = await model.infer(await tensors(model, [image]))
    embedding, features = out["embedding"], out["features"]
    weights = out["pool_weights"][0] if "pool_weights" in out else None
    start, stop = adapter.embedding_slice or (0, embedding.shape[0])
    blocks = [b for b in embedding_blocks(embedding, features, weights) if start <= b[0] and b[1] <= stop]
    if not blocks:
        raise ServiceError(422, "gradcam_unavailable",
                           f"no block of the embedding{'' if adapter.embedding_slice is None else ' part'} adapter "
                           f"{adapter.id} reads from {bundle.ref} pools its last feature map (as a plain, "
                           "L2-normalised or weighted mean), so its gradient with respect to that map has no closed "
                           "form here")
    probabilities = adapter.classify(embedding[None])[0]
    predicted = int(np.argmax(probabilities))
    target_index = adapter.classes.index(target) if target is not None else predicted
    grad = np.zeros(embedding.shape[0])
    grad[start:stop] = adapter.scorer.logit_gradient(adapter.view(embedding[None]), np.asarray([target_index]))[0]
    heatmap = await asyncio.to_thread(head_gradcam, features, feature_gradient(grad, features, blocks, weights),
                                      tuple(bundle.input_size))
    flags, nearest = adapter.outside(embedding[None])
    names = {"mean": "mean", "l2_mean": "L2-normalised mean", "l2_weighted_mean": "L2-normalised weighted mean"}
    whole = len(blocks) == 1 and blocks[0][:2] == (0, embedding.shape[0])
    spans = ", ".join(f"embedding[{a}:{b}]" for a, b, _ in blocks)
    explained = {"embedding_slice": list(blocks[0][:2]),  # the first; every one in embedding_slices
                 "embedding_slices": [list(b[:2]) for b in blocks], "embedding_dim": int(embedding.shape[0]),
                 "pooling": " + ".join(names[how] for _, _, how in blocks),
                 "note": "the whole embedding is the spatial mean of the last feature map" if whole else
                 f"only {spans}, pooled from the last feature map, is explained; the rest of the embedding "
                 "(other stages, or the part the adapter does not read) is held fixed"}
    if adapter.embedding_part is not None:
        explained["embedding_part"] = adapter.embedding_part
    described = {k: v for k, v in bundle.manifest.get("embedding", {}).items() if k in ("stages", "pooling")}
    if described:  # what the manifest says the embedding is built from, when it says
        explained["manifest"] = described
    return {"label": adapter.classes[predicted], "score": float(probabilities[predicted]),
            "target": adapter.classes[target_index], "map": heatmap, "explained": explained,
            "out_of_support": flags[0], "support_distance": nearest[0]}


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
