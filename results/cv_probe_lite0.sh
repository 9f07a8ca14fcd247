#!/usr/bin/env bash
# Round 3: grouped 5-fold cross-validation of the probed recipe (training/configs/*_probe_cbam_efficientnet_lite0.json):
# frozen ImageNet EfficientNet-Lite0, linear probe as epoch 0, then 4 epochs of the CBAM gates + classifier; the plain
# twin trains its classifier alone on the same folds and budget. Baseline and majority rate on every fold's test part.
# Fold 0 of each CBAM run is served. Run from the repo root with ../shared/data beside it: bash results/cv_probe_lite0.sh
set -uo pipefail
T=".venv/bin/python -m training"
run() {  # dataset model fold [run name and extra --set arguments]
    local name=$1 model=$2 fold=$3 tag=${4:-$2}
    local out=runs/cv_probe/$name/$tag/fold$fold
    [ -f "$out/metrics.json" ] && return 0
    local data=../shared/data/ebhi_seg; [[ $name == breakhis ]] && data=../shared/data/breakhis_200x
    mkdir -p "$(dirname "$out")"
    $T train --config "training/configs/${name}_probe_cbam_efficientnet_lite0.json" --data $data --set model=$model \
        --set cv_fold=$fold "${@:5}" --out "$out" > "$out.log" 2>&1 || echo "failed: $out (see $out.log)"
}
for fold in 0 1 2 3 4; do
    for name in ebhi breakhis; do
        run $name cbam_efficientnet_lite0 $fold
        run $name efficientnet_lite0 $fold
    done
done
# The probe alone (epoch 0) on the last map with stages 4 and 5 beside it (feature_stages), plain Lite0
for fold in 0 1 2 3 4; do
    for name in ebhi breakhis; do
        run $name efficientnet_lite0 $fold efficientnet_lite0_stages45 --set epochs=0 \
            --set 'model_args={"drop_rate": 0.2, "feature_stages": [4, 5]}'
    done
done
