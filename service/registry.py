"""The loaded models: one ORT runtime and one micro-batcher per bundle, found by name or name/version.

A domain layer: a lookup that fails raises `ModelNotFound` or `WrongTask` (both `LookupFailed`, with a
stable `code`); errors.py, the HTTP side, turns them into 404 and 422.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from .batching import MicroBatcher
from .metrics import Metrics
from .runtime import ModelRuntime, pads_batches
from .settings import MODEL_REF, Settings
from .store import Bundle, BundleError, discover, store_defaults

log = logging.getLogger("histoserve.registry")


class LookupFailed(Exception):
    """A model the registry cannot hand out; `code` is the stable word clients branch on."""

    code = "model_not_found"

    def __init__(self, message: str, detail: object = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        if code is not None:
            self.code = code


class ModelNotFound(LookupFailed):
    """No loaded bundle by that reference (or no bundle of the kind asked for)."""


class WrongTask(LookupFailed):
    """The bundle exists but cannot do what was asked (an embedding bundle asked to classify)."""


@dataclass
class LoadedModel:
    bundle: Bundle
    runtime: ModelRuntime
    batcher: MicroBatcher

    async def infer(self, images: list[np.ndarray], *, priority: str = "interactive") -> list[dict[str, np.ndarray]]:
        """Preprocessed images -> one dict of model.onnx outputs per image, through the batcher (see its lanes)."""
        return await self.batcher.submit(images, priority=priority)

    def describe(self) -> dict:
        b = self.bundle
        m = b.manifest
        return {
            "name": b.name, "version": b.version, "task": b.task, "architecture": m.get("architecture"),
            "classes": list(b.classes), "input_size": list(b.input_size),
            "preprocessing": {"resize": list(b.preprocessing.resize), "interpolation": b.preprocessing.interpolation,
                              "mean": list(b.preprocessing.mean), "std": list(b.preprocessing.std)},
            "temperature": b.temperature,
            "embedding": {"distance": b.embedding_distance, "temperature": b.embedding_temperature}
            if b.has_embedding else None,
            "gradcam": b.gradcam_file is not None,
            "metrics": m.get("metrics", {}), "split": m.get("split"), "recipe": m.get("recipe"),
            "exported_at": m.get("exported_at"),
            "provider": self.runtime.provider, "providers": self.runtime.providers,
        }


def max_batch_images(bundle: Bundle, max_batch_size: int) -> int:
    """Images per ONNX Runtime call: `max_batch_size` counts forward passes, and a classify graph that averages
    V views (bench.tta) runs each image V times, so it batches max(1, max_batch_size // V) images."""
    views = bundle.graphs["classify"].get("test_time_augmentation", {}).get("views") or [None]
    return max(1, max_batch_size // len(views))


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.models: dict[tuple[str, int], LoadedModel] = {}
        self.refused: dict[str, str] = {}  # bundle path -> why it was refused
        # the settings name the defaults; else the store's defaults.json; else the first bundle by name
        chosen = store_defaults(settings.model_store)
        self.default_model = settings.default_model or chosen.get("classification")
        self.default_embedding_model = settings.default_embedding_model or chosen.get("embedding")

    # --- loading (lifespan)

    def load(self) -> None:
        """Check and open every bundle in the store; a refused bundle is logged and skipped."""
        bundles, refused = discover(self.settings.model_store)
        for path, reason in refused:
            self._refuse(str(path), reason)
        for bundle in bundles:
            try:
                runtime = ModelRuntime(bundle, self.settings)
            except BundleError as e:
                self._refuse(str(bundle.path), str(e))
                continue
            if self.settings.require_cuda and runtime.provider != "CUDAExecutionProvider":
                raise RuntimeError(f"require_cuda is set but {bundle.ref} runs on {runtime.providers}; "
                                   "is onnxruntime-gpu installed with CUDA 13 and cuDNN 9?")
            self.models[(bundle.name, bundle.version)] = LoadedModel(bundle, runtime, self._batcher(bundle, runtime))
            self.metrics.model_info.labels(model=bundle.name, version=str(bundle.version),
                                           provider=runtime.provider).set(1)
            log.info("loaded %s (%s) on %s", bundle.ref, bundle.task, runtime.providers)
        if not self.models:
            log.warning("no bundle loaded from %s: /classify and /adapt will answer 404", self.settings.model_store)

    def _refuse(self, path: str, reason: str) -> None:
        self.refused[path] = reason
        log.error("refusing bundle %s: %s", path, reason)

    def _batcher(self, bundle: Bundle, runtime: ModelRuntime) -> MicroBatcher:
        labels = {"model": bundle.name, "version": str(bundle.version)}
        duration = self.metrics.inference_duration.labels(**labels)
        size = self.metrics.batch_size.labels(**labels)
        depth = self.metrics.queue_depth.labels(**labels)
        self.metrics.queue_capacity.labels(**labels).set(self.settings.max_queue)

        def on_batch(n: int, seconds: float) -> None:
            size.observe(n)
            duration.observe(seconds)

        return MicroBatcher(runtime.run, max_batch_size=max_batch_images(bundle, self.settings.max_batch_size),
                            max_wait_ms=self.settings.max_wait_ms, max_queue=self.settings.max_queue,
                            max_queue_wait_ms=self.settings.max_queue_wait_ms,
                            max_background_queue=self.settings.max_background_queue,
                            concurrent_batches=self.settings.concurrent_batches,
                            pad_to_max=pads_batches(self.settings, runtime.provider),
                            on_batch=on_batch, on_depth=depth.set)

    def warm_up(self) -> None:
        """Run every batch size the batcher can produce once, so no client pays for first-call setup."""
        for model in self.models.values():
            started = time.perf_counter()
            h, w = model.bundle.input_size
            features = None
            sizes = [model.batcher.max_batch_size] if model.batcher.pad_to_max else range(
                1, model.batcher.max_batch_size + 1)
            for n in sizes:
                outputs = model.runtime.run(np.zeros((n, 3, h, w), dtype=np.float32))
                features = outputs["features"][:1]
            if model.runtime.gradcam_session is not None:
                model.runtime.gradcam(features, np.zeros(1, dtype=np.int64))
            log.info("warmed up %s at batch sizes %s in %.2fs", model.bundle.ref, list(sizes),
                     time.perf_counter() - started)

    def start(self) -> None:
        for model in self.models.values():
            model.batcher.start()

    async def stop(self) -> None:
        for model in self.models.values():
            await model.batcher.stop()

    def providers(self) -> list[str]:
        return sorted({p for m in self.models.values() for p in m.runtime.providers})

    # --- lookup (requests)

    def versions(self, name: str) -> list[LoadedModel]:
        return [m for (n, _), m in sorted(self.models.items()) if n == name]

    def resolve(self, ref: str) -> LoadedModel:
        """`name` (its highest loaded version) or `name/version` -> the loaded model, else ModelNotFound."""
        if not MODEL_REF.match(ref):
            raise ModelNotFound(f"{ref!r} is not a model name or name/version", {"loaded": self.refs()})
        name, _, version = ref.partition("/")
        found = self.models.get((name, int(version))) if version else (self.versions(name) or [None])[-1]
        if found is None:
            raise ModelNotFound(f"model {ref!r} is not loaded", {"loaded": self.refs()})
        return found

    def refs(self) -> list[str]:
        return [m.bundle.ref for m in self.models.values()]

    def unready_reasons(self) -> list[str]:
        """Why this replica cannot serve its configured default models; empty when it can.

        A load balancer needs a replica that answers the requests it will be sent: the configured
        defaults (HISTOSERVE_DEFAULT_MODEL / _DEFAULT_EMBEDDING_MODEL) must be loaded with the right
        task, and without them at least one bundle must be. A refused bundle that is not a default
        does not make the replica unready; /readyz lists it in `refused`.
        """
        reasons = []
        if not self.models:
            reasons.append(f"no bundle loaded from {self.settings.model_store}")
        for ref, pick in ((self.default_model, self.classifier),
                          (self.default_embedding_model, self.embedder)):
            if ref:
                try:
                    pick(ref)
                except LookupFailed as e:
                    reasons.append(f"default model {ref!r}: {e.message}")
        return reasons

    def classifier(self, ref: str | None) -> LoadedModel:
        """The model /classify uses: the one named, else the configured default, else the first by name."""
        model = self._pick(ref, self.default_model, lambda m: m.bundle.task == "classification",
                           "classification")
        if model.bundle.task != "classification":
            raise WrongTask(f"{model.bundle.ref} is an embedding bundle; build an adapter with POST /adapt "
                            "and classify with adapter=<id>", code="not_a_classifier")
        return model

    def embedder(self, ref: str | None) -> LoadedModel:
        """The model /adapt uses: the one named, else the configured default, else the first embedding bundle."""
        model = self._pick(ref, self.default_embedding_model, lambda m: m.bundle.task == "embedding",
                           "embedding")
        if not model.bundle.has_embedding:
            raise WrongTask(f"{model.bundle.ref} has no embedding output", code="no_embedding")
        return model

    def defaults(self) -> dict[str, str | None]:
        """The bundles requests that name no model get, as name/version."""
        out: dict[str, str | None] = {}
        for kind, pick in (("classification", self.classifier), ("embedding", self.embedder)):
            try:
                out[kind] = pick(None).bundle.ref
            except LookupFailed:
                out[kind] = None
        return out

    def _pick(self, ref: str | None, default: str | None, fits, kind: str) -> LoadedModel:
        if ref:
            return self.resolve(ref)
        if default:
            return self.resolve(default)
        candidates = [m for _, m in sorted(self.models.items()) if fits(m)]
        if not candidates:
            raise ModelNotFound(f"no {kind} bundle is loaded and none was named; the store holds {self.refs()}")
        # The first bundle by name, at its highest version.
        first = candidates[0].bundle.name
        return [m for m in candidates if m.bundle.name == first][-1]
