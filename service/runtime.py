"""ONNX Runtime sessions for one bundle: the classify graph, and the Grad-CAM head when present.

ONNX Runtime falls back to CPU without a word when CUDA libraries are missing, so every
session reports the providers it really got (`providers`), and the caller decides whether
that is acceptable (`require_cuda`).
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from bundle import Graph, check_io

from .settings import Settings
from .store import Bundle, BundleError

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def wanted_providers(settings: Settings) -> list[str]:
    """The providers to ask for: the configured list, or CUDA first when this build offers it."""
    if settings.providers is not None:
        return list(settings.providers)
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def provider_options(settings: Settings) -> list[str | tuple[str, dict[str, str]]]:
    """`wanted_providers` in the form InferenceSession takes, CUDA with its settings."""
    cuda = {"cudnn_conv_algo_search": settings.cuda_conv_algo_search, "use_tf32": str(int(settings.cuda_tf32))}
    return [(p, cuda) if p == "CUDAExecutionProvider" else p for p in wanted_providers(settings)]


def pads_batches(settings: Settings, provider: str) -> bool:
    """Whether every batch runs at its full size on a session of `provider` (settings.pad_batches)."""
    return settings.pad_batches == "always" or (settings.pad_batches == "auto" and provider == "CUDAExecutionProvider")


def _session_options(settings: Settings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPT_LEVELS[settings.graph_optimization_level]
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    spin = "1" if settings.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    options.add_session_config_entry("session.force_spinning_stop", "1" if settings.force_spinning_stop else "0")
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
    return options


def _check_io(session: ort.InferenceSession, bundle: Bundle, key: str) -> None:
    """The graph's real inputs and outputs must be the ones the manifest declares (the contract's own check)."""
    graph = bundle.spec.graphs[key] if bundle.spec is not None else Graph.model_validate(bundle.graphs[key])
    check_io(session, graph, key)


class ModelRuntime:
    """The ORT sessions of one bundle."""

    def __init__(self, bundle: Bundle, settings: Settings):
        self.bundle = bundle
        providers = provider_options(settings)
        options = _session_options(settings)
        try:
            self.session = ort.InferenceSession(str(bundle.model_file), options, providers=providers)
            self.gradcam_session = None
            if bundle.gradcam_file is not None:
                self.gradcam_session = ort.InferenceSession(str(bundle.gradcam_file), options, providers=providers)
        except Exception as e:  # ORT raises its own exception types for unreadable graphs
            raise BundleError(f"ONNX Runtime cannot load the graph: {e}") from e
        _check_io(self.session, bundle, "classify")
        if self.gradcam_session is not None:
            _check_io(self.gradcam_session, bundle, "gradcam")
        self.output_names = [o.name for o in self.session.get_outputs()]
        # On CUDA, IOBinding: the batch is copied to the device once, every output stays there until one
        # copy back after the run (no per-output staging). On CPU, session.run is already zero-copy: unchanged.
        self.io_binding_device = "cuda" if self.provider == "CUDAExecutionProvider" else None

    @property
    def providers(self) -> list[str]:
        """What ONNX Runtime really gave the classify session (not what was asked for)."""
        return list(self.session.get_providers())

    @property
    def provider(self) -> str:
        return self.providers[0]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images (B, 3, H, W) float32, already normalised -> every output of model.onnx."""
        if self.io_binding_device is not None:
            return self._run_bound(images, self.io_binding_device)
        outputs = self.session.run(self.output_names, {"image": images})
        return dict(zip(self.output_names, outputs, strict=True))

    def _run_bound(self, images: np.ndarray, device: str) -> dict[str, np.ndarray]:
        """The same run through IOBinding, outputs bound on `device` ("cuda", or "cpu" in the CPU tests)."""
        binding = self.session.io_binding()
        binding.bind_cpu_input("image", np.ascontiguousarray(images))
        for name in self.output_names:
            binding.bind_output(name, device)
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu(), strict=True))

    def gradcam(self, features: np.ndarray, target_class: np.ndarray) -> np.ndarray:
        """features (B, C, h, w), target_class (B,) int64 -> maps (B, H, W) in [0, 1]."""
        if self.gradcam_session is None:
            raise RuntimeError(f"{self.bundle.ref} has no gradcam graph")
        (maps,) = self.gradcam_session.run(["gradcam"], {"features": features, "target_class": target_class})
        return maps
