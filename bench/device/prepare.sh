#!/usr/bin/env bash
# Stage what bench/device/check.sh needs on a GPU host that cannot download (this project's lent H200):
# onnxruntime-gpu and the serving wheels for its Python 3.12, the model store, and the benchmark's EBHI-Seg
# images, cut into parts of at most ~55 MB under .device/part1, part2, ... (git-ignored), one part per call,
# because a call carries at most 64 MiB. The 255 MB onnxruntime-gpu wheel only fits once bench/device/fatbin.py
# has blanked the CUDA machine code an sm_90 GPU never reads (the sm_90 code stays byte for byte).
#
#   bash bench/device/prepare.sh [DATA_DIR]        # DATA_DIR: the folder holding ebhi_seg/ (../shared/data)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_DIR=${1:-../shared/data}
PY=.venv/bin/python
OUT=.device
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rm -rf "$OUT" && mkdir -p "$OUT/stage/whl"

download() {  # wheels for the GPU host's CPython 3.12 on x86-64, at this project's pins
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d "$1" "${@:2}"
}
pin() { $PY -c "import importlib.metadata as m, sys; print(*(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" "$@"; }

# the gpu extra's pin, as pyproject.toml states it
download "$WORK" "$($PY -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"][0])')"
(cd "$WORK" && unzip -q onnxruntime_gpu-*.whl 'onnxruntime/*')
cuda_so=$WORK/onnxruntime/capi/libonnxruntime_providers_cuda.so
$PY bench/device/fatbin.py "$cuda_so" "$WORK/cuda_sm90.so"
xz -T2 -9 -c "$WORK/cuda_sm90.so" > "$OUT/stage/cuda_sm90.so.xz"
rm "$cuda_so" "$WORK"/onnxruntime/capi/libonnxruntime_providers_tensorrt.so
tar -C "$WORK" -cJf "$OUT/stage/onnxruntime.tar.xz" onnxruntime
# the serving install (numpy, pillow, anyio, h11, httpx, pytest ... are in the host's own image)
download "$OUT/stage/whl" $(pin fastapi starlette uvicorn httptools python-multipart pydantic pydantic-core \
    pydantic-settings python-dotenv annotated-types annotated-doc typing-inspection typing-extensions opentelemetry-api \
    openslide-python openslide-bin redis)

# the images bench.load_samples picks (16 per class, as the full benchmark), under their own names
$PY - "$DATA_DIR" "$OUT/stage/data" <<'EOF'
import shutil, sys
from pathlib import Path
from bench.images import DATASET, load_samples
for s in load_samples(Path(sys.argv[1]), 16):
    dst = Path(sys.argv[2]) / DATASET / s.path.parent.name / s.path.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(s.path, dst)
EOF
cp -r model_store "$OUT/stage/model_store"

# pack whole files into parts of at most 55 MB (the tree that travels beside them is ~9 MB without model_store)
$PY - "$OUT" <<'EOF'
import shutil, sys
from pathlib import Path
out = Path(sys.argv[1]); stage = out / "stage"; limit = 55e6
files = sorted((p for p in stage.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
parts: list[list] = []
for f in files:
    part = next((p for p in parts if p[0] + f.stat().st_size <= limit), None)
    if part is None:
        parts.append(part := [0])
    part[0] += f.stat().st_size
    part.append(f)
for i, (size, *members) in enumerate(parts, 1):
    for f in members:
        dst = out / f"part{i}" / f.relative_to(stage)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f, dst)
    print(f"{out}/part{i}: {len(members)} files, {size / 1e6:.1f} MB")
shutil.rmtree(stage)
EOF
