#!/usr/bin/env bash
# On the GPU host, from the repository root, once every part of bench/device/prepare.sh is in STASH:
# onnxruntime-gpu and the serving wheels into /tmp/site, then the checks whose results come back in OUT:
#   1. bench.gpu: every bundle on CUDA against the CPU (providers really given, parity within tolerance)
#   2. the service and bundle tests with CUDA present (the service picks CUDA by itself there)
#   3. python -m bench --provider cuda on the defaults, batch 8 as the GPU compose file sets it
#
#   STASH=/root/stash OUT=/tmp/out [TESTS="tests/service tests/bundle"] [LEVEL_SECONDS=5] bash bench/device/check.sh
set -uo pipefail
STASH=${STASH:-/root/stash}
OUT=${OUT:-/tmp/out}
TESTS=${TESTS:-tests/service tests/bundle}
LEVEL_SECONDS=${LEVEL_SECONDS:-5}
mkdir -p /tmp/site "$OUT"
tar -C /tmp/site -xJf "$STASH/onnxruntime.tar.xz"
xz -dc "$STASH/cuda_sm90.so.xz" > /tmp/site/onnxruntime/capi/libonnxruntime_providers_cuda.so
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$STASH"/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
# CUDA 13 and cuDNN 9 from the host's nvidia-* wheels (the GPU image has them on the system library path)
LD_LIBRARY_PATH=$(python3 -c 'import glob, nvidia, os
print(":".join(sorted({os.path.dirname(p) for p in glob.glob(nvidia.__path__[0] + "/**/lib*.so*", recursive=True)})))')
export LD_LIBRARY_PATH
rm -rf model_store && cp -r "$STASH/model_store" model_store
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/host.txt"
python3 -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())' | tee -a "$OUT/host.txt"

echo "== 1. bench.gpu"
timeout 180 python3 -m bench.gpu --store model_store --data-dir "$STASH/data" --results-dir "$OUT" > "$OUT/gpu.log" 2>&1
echo "bench.gpu rc=$?"; grep -E '"bundle"|"passed"|probabilities_max_abs"|gradcam_max_abs"|cosine_min"|problems' "$OUT/gpu.log" | head -60

echo "== 2. $TESTS"
timeout 240 python3 -m pytest $TESTS -q -p no:cacheprovider -rfs > "$OUT/pytest.log" 2>&1
echo "pytest rc=$?"; grep -E "passed|failed|FAILED|ERROR" "$OUT/pytest.log" | tail -25

echo "== 3. python -m bench --provider cuda"
HISTOSERVE_MAX_BATCH_SIZE=8 timeout 300 python3 -m bench --provider cuda --store model_store --data-dir "$STASH/data" \
    --model ebhi_cbam_efficientnet_lite2 --adapt-model fewshot_dual_attention_lite2 --no-naive \
    --level-seconds "$LEVEL_SECONDS" --soak-requests 300 --results-dir "$OUT" > "$OUT/bench.log" 2>&1
echo "bench rc=$?"; tail -45 "$OUT/bench.log"
