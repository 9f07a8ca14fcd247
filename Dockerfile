# histoserve images. Targets:
#   serve (default)  the service on ONNX Runtime: CUDA image by default, CPU image with --build-arg RUNTIME=cpu
#   train            `python -m training ...` with PyTorch, for training on one's own data on the GPU
#
#   docker build -t histoserve:gpu .
#   docker build -t histoserve:cpu --build-arg RUNTIME=cpu .
#   docker build -t histoserve:train --target train .
#
# The serving install is the base dependencies plus exactly one ONNX Runtime extra (`gpu` or `cpu`):
# onnxruntime and onnxruntime-gpu overwrite each other's files, and neither image carries torch.

# gpu: onnxruntime-gpu 1.31 needs CUDA 13 and cuDNN 9, which this base provides. cpu: plain onnxruntime.
ARG RUNTIME=gpu
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG UBUNTU_IMAGE=ubuntu:24.04

# ---------------------------------------------------------------------------------------------------
# python: Ubuntu 24.04's Python 3.12 with venv support. Every stage below starts from the same OS so a
# virtualenv built in one stage runs unchanged in another (its interpreter is /usr/bin/python3.12).
FROM ${UBUNTU_IMAGE} AS python
# Ubuntu's archive keeps only the current build of each package, so pinning apt versions would break
# the build at the next security update; the base image tag is what pins the OS.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# ---------------------------------------------------------------------------------------------------
# build: the serving virtualenv. Only bundle/ (the torch-free bundle contract) and service/ are copied,
# so the image cannot import models/ or training/.
FROM python AS build
ARG RUNTIME
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bundle/ bundle/
COPY service/ service/
RUN test "${RUNTIME}" = gpu -o "${RUNTIME}" = cpu \
    || { echo "RUNTIME must be gpu or cpu, got '${RUNTIME}'" >&2; exit 1; }
RUN python3.12 -m venv /opt/venv \
    && /opt/venv/bin/pip install ".[${RUNTIME}]" \
    && /opt/venv/bin/python -c "import onnxruntime, openslide, service" \
    && if /opt/venv/bin/python -c "import torch" 2>/dev/null; then echo "torch leaked into the serving install" >&2; exit 1; fi

# ---------------------------------------------------------------------------------------------------
# Runtime bases: what differs between the CUDA and the CPU image is the OS layer and the default for
# refusing to start without CUDA. The CUDA image refuses unless HISTOSERVE_REQUIRE_CUDA=false is set.
FROM ${CUDA_IMAGE} AS base-gpu
ENV HISTOSERVE_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider \
    HISTOSERVE_REQUIRE_CUDA=true

FROM ${UBUNTU_IMAGE} AS base-cpu
ENV HISTOSERVE_PROVIDERS=CPUExecutionProvider \
    HISTOSERVE_REQUIRE_CUDA=false

# ---------------------------------------------------------------------------------------------------
# train: PyTorch training and ONNX export against a mounted data directory. PyPI's torch wheel for
# Linux brings its own CUDA libraries, so only the host driver matters. Not part of the serving image.
FROM python AS train
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bundle/ bundle/
COPY models/ models/
COPY training/ training/
RUN python3.12 -m venv /opt/venv && /opt/venv/bin/pip install ".[train,cpu]"
RUN groupadd --system --gid 10001 histoserve \
    && useradd --system --uid 10001 --gid histoserve --home-dir /work --shell /usr/sbin/nologin histoserve \
    && mkdir -p /work /data /runs /model_store \
    && chown histoserve:histoserve /runs /model_store \
    && chmod 1777 /work
# HOME is /work, writable by any uid, because compose may run this image as the host user (see train there).
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    HOME=/work
WORKDIR /work
USER 10001:10001
VOLUME ["/runs", "/model_store"]
ENTRYPOINT ["python", "-m", "training"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------------
# serve: the default target. Non-root, default bundles baked in read-only (owned by root), the model
# store and the adapter state as volumes, a health check that needs nothing but Python.
# `base-${RUNTIME}` names a stage above (base-gpu or base-cpu), whose FROM lines carry the tags;
# hadolint cannot resolve a stage name built from a build argument and takes it for an untagged image.
# hadolint ignore=DL3006
FROM base-${RUNTIME} AS serve
# Same reason as above: the base image tag pins the OS, the archive does not keep old builds.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 histoserve \
    && useradd --system --uid 10001 --gid histoserve --home-dir /srv/histoserve --shell /usr/sbin/nologin histoserve \
    && mkdir -p /srv/histoserve/model_store /srv/histoserve/state \
    && chown histoserve:histoserve /srv/histoserve/state
COPY --from=build /opt/venv /opt/venv
COPY model_store/ /srv/histoserve/model_store/
COPY deploy/healthcheck.py /opt/histoserve/healthcheck.py
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HISTOSERVE_HOST=0.0.0.0 \
    HISTOSERVE_PORT=8000 \
    HISTOSERVE_MODEL_STORE=/srv/histoserve/model_store \
    HISTOSERVE_STATE_DIR=/srv/histoserve/state
WORKDIR /srv/histoserve
USER 10001:10001
VOLUME ["/srv/histoserve/model_store", "/srv/histoserve/state"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/histoserve/healthcheck.py", "/healthz"]
CMD ["python", "-m", "service"]
