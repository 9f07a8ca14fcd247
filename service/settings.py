"""Every setting of the service, read from the environment with the prefix `HISTOSERVE_`.

This is the only module that reads the environment. The README's "Service settings" table
lists each field; keep the two in step.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]

# Execution providers the service knows how to ask ONNX Runtime for, in order of preference.
KNOWN_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
# A model reference is `name` or `name/version`; names are directory names in the store.
MODEL_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(/[1-9][0-9]{0,8})?$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HISTOSERVE_", env_ignore_empty=True, extra="ignore")

    # --- where the bundles are, and which answer when the client names none
    model_store: Path = REPO_ROOT / "model_store"
    default_model: str | None = None  # name or name/version; None: the store's defaults.json, else the first by name
    default_embedding_model: str | None = None  # for /adapt; None: first embedding bundle by name

    # --- network
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    # --- ONNX Runtime
    # None: CUDA first when this onnxruntime build offers it, then CPU.
    providers: Annotated[list[str] | None, NoDecode] = None
    require_cuda: bool = False  # refuse to start unless every session really runs on CUDA
    # CUDA only. ONNX Runtime's default, EXHAUSTIVE, benchmarks every conv again at each new batch size: with
    # the micro-batcher's mixed sizes that stalled each batch by seconds on an H200 (round 13's GPU check).
    cuda_conv_algo_search: Literal["HEURISTIC", "EXHAUSTIVE", "DEFAULT"] = "HEURISTIC"
    # CUDA only. TF32 convs and matmuls (ORT's default on) moved outputs by up to 5e-3 from the CPU's on the
    # default models; off, the GPU answers what the CPU-validated figures describe.
    cuda_tf32: bool = False
    # Run every micro-batch at its full size, padded: one input shape per session. auto: on CUDA, where ORT
    # sets its convs up again at each new batch size (the H200 bench: mixed sizes ran 10x slower than batch 1).
    pad_batches: Literal["auto", "always", "never"] = "auto"
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    intra_op_threads: int = Field(0, ge=0, le=256)  # 0: ONNX Runtime decides
    inter_op_threads: int = Field(0, ge=0, le=256)
    # Busy-waiting ORT threads cut latency on an idle, dedicated host but steal the cores from
    # each other (classify and Grad-CAM sessions, HTTP handling) on a small or shared one.
    allow_spinning: bool = False
    # With spinning on: the spin stops as soon as the last concurrent run returns, so that between batches
    # the cores go back to HTTP handling and decoding (ORT's session.force_spinning_stop).
    force_spinning_stop: bool = False

    # --- micro-batching (two knobs shape a batch), how many batches run at once, and the bounded queue
    # 2 on CPU: the two-view Lite2 default runs fastest at batch 1-2 in raw ORT on 2 cores (larger batches
    # leave the caches), and batch 2 served 10-26 % more requests/s than 8 at concurrency 16-32 with batch-1
    # latency unchanged (bench/results/sweep-20261203T181353Z.json); the GPU compose file sets 8.
    # Counted in forward passes: a graph that averages V views (bench.tta) batches max(1, N // V) images.
    max_batch_size: int = Field(2, ge=1, le=256)
    max_wait_ms: float = Field(5.0, ge=0.0, le=1000.0)
    # Batches of one model that run at once, each in its own thread on the shared session (Triton's
    # instance count); concurrent runs share the session's intra-op pool. 2: on the 2-core machine, 10-15 %
    # more throughput at concurrency 16-32 than 1, batch-1 latency unchanged (bench/results, README).
    concurrent_batches: int = Field(2, ge=1, le=64)
    max_queue: int = Field(64, ge=1, le=100_000)
    # Interactive requests whose estimated queue wait (items ahead, recent batch times) exceeds this get
    # 503 + Retry-After at once instead of queueing; 0: no deadline. Background (slide tile) work is exempt.
    max_queue_wait_ms: float = Field(5000.0, ge=0, le=600_000)
    # Background lane (slide tiles): its own bounded queue; a full one makes the submitter wait, never fail.
    max_background_queue: int = Field(64, ge=1, le=100_000)

    # --- uploads
    max_upload_bytes: int = Field(32 * 1024 * 1024, ge=1024, le=1024**3)  # whole request body
    max_files: int = Field(16, ge=1, le=1024)  # images in one /classify request
    max_image_pixels: int = Field(50_000_000, ge=1, le=1_000_000_000)  # width * height, checked before decoding

    # --- few-shot adapters
    state_dir: Path = REPO_ROOT / "state"
    api_key: SecretStr | None = None  # when set, /adapt and DELETE need X-API-Key
    adapter_max_classes: int = Field(20, ge=2, le=1000)
    adapter_max_shots: int = Field(50, ge=1, le=10_000)  # per class
    adapter_max_count: int = Field(1000, ge=1, le=1_000_000)  # adapters kept at once
    # Support-set augmentation when a /adapt request does not say: "dihedral" embeds each image in its 8
    # rotations/flips (8x the embedding work); "none" embeds it as sent.
    adapter_augment: Literal["none", "dihedral"] = "none"
    label_max_length: int = Field(64, ge=1, le=256)
    label_pattern: str = r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$"

    # --- whole-slide jobs (POST /slides); results live under <state_dir>/slides/
    slide_root: Path | None = None  # slides clients may name by `path` instead of uploading; None: uploads only
    max_slide_bytes: int = Field(4 * 1024**3, ge=1024, le=1024**4)  # one uploaded slide, streamed to disk
    slide_retention_hours: float = Field(72.0, gt=0, le=24 * 365)  # uploads and results of finished jobs
    slide_max_tiles: int = Field(20_000, ge=1, le=10_000_000)  # tissue tiles in one slide; more: the job fails
    slide_max_jobs: int = Field(1, ge=1, le=64)  # slide jobs running at once; the rest wait queued
    slide_job_timeout_s: float = Field(3600.0, gt=0, le=7 * 86400)  # one job's running time
    # Tiles a job submits at once. An interactive request waits at most for the background batch already in
    # ORT, so small is kind to /classify. With the 224 px default on 2 CPU cores (python -m bench.slides),
    # /classify p50 during a job was 4.6x idle at 4 tiles (bench/results/slides-20261201T120446Z.json) and
    # 1.6x at 1 (slides-20261201T120532Z.json), the job keeping 0.79x / 0.85x of a plain loop. Raise it on a GPU.
    slide_batch_size: int = Field(1, ge=1, le=1024)
    # Physical size (um) of one network-input pixel for a bundle whose manifest has no pixel_size_um and
    # whose dataset has no built-in estimate (service/slides/resolution.py); None: a job on such a bundle
    # needs an explicit tile_size (level-0 pixels per tile) or fails saying so.
    slide_model_mpp: float | None = Field(None, gt=0, le=100)

    # --- scaling out (several replicas behind a load balancer)
    # None: adapters are files under state_dir (one process). redis://host:port/db: they live in Redis,
    # shared by every replica (README, "Scaling out").
    state_url: str | None = Field(None, pattern=r"^rediss?://[^\s]+$")
    # On SIGTERM: /readyz answers 503 at once while requests are still served for this long (the load
    # balancer's time to notice), then no new connections, and in-flight requests get shutdown_timeout_s.
    shutdown_delay_s: float = Field(0.0, ge=0.0, le=300.0)
    shutdown_timeout_s: float = Field(10.0, gt=0.0, le=3600.0)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        # `HISTOSERVE_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider` reads better than JSON.
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("providers must name at least one execution provider")
        unknown = [p for p in value if p not in KNOWN_PROVIDERS]
        if unknown:
            raise ValueError(f"unknown execution providers {unknown}; known: {list(KNOWN_PROVIDERS)}")
        return value

    @field_validator("default_model", "default_embedding_model")
    @classmethod
    def _model_ref(cls, value: str | None) -> str | None:
        if value is not None and not MODEL_REF.match(value):
            raise ValueError(f"{value!r} is not a model reference of the form name or name/version")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if value == "localhost":
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError as e:
            raise ValueError(f"host must be an IP address or 'localhost', got {value!r}") from e
        return value

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, value: SecretStr | None) -> SecretStr | None:
        # A short or placeholder key protects nothing; refuse it rather than run half-protected.
        if value is None:
            return None
        secret = value.get_secret_value()
        if len(secret) < 16 or secret.lower() in {"changethis", "changeme", "secret", "password"}:
            raise ValueError("api_key must be at least 16 characters and not a placeholder")
        return value

    @field_validator("label_pattern")
    @classmethod
    def _label_pattern(cls, value: str) -> str:
        try:
            pattern = re.compile(value)
        except re.error as e:
            raise ValueError(f"label_pattern is not a regular expression: {e}") from e
        # Labels end up in JSON and logs, never in paths; still, refuse patterns that accept separators.
        for bad in ("/", "\\", "\n", "\x00"):
            if pattern.fullmatch(f"a{bad}b"):
                raise ValueError(f"label_pattern must not accept {bad!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.require_cuda and self.providers is not None and "CUDAExecutionProvider" not in self.providers:
            raise ValueError("require_cuda is set but providers leaves CUDAExecutionProvider out")
        if self.max_queue < self.max_files:
            raise ValueError("max_queue must be at least max_files, or a single request could never fit")
        return self
