#!/usr/bin/env bash
# Grouped 5-fold cross-validation of the pretrained headline comparison: CBAM EfficientNet-Lite0 vs
# its plain twin (same folds, budget and recipe), with the colour+texture baseline and the majority
# rate evaluated on every fold's test part. Fold 0 of the EBHI CBAM run is the served EBHI default.
# Run from the repo root with ../shared/data beside it: bash results/cv_lite0.sh
set -uo pipefail
T=".venv/bin/python -m training"
E=../shared/data/ebhi_seg
B=../shared/data/breakhis_200x
run() {  # dataset config model fold
    local name=$1 cfg=$2 model=$3 fold=$4
    local out=runs/cv/$name/$model/fold$fold
    [ -f "$out/metrics.json" ] && return 0
    local data=$E; [[ $name == breakhis* ]] && data=$B
    $T train --config "$cfg" --data $data --set model=$model --set cv_fold=$fold --out "$out" > "$out.log" 2>&1 \
        || echo "failed: $out (see $out.log)"
}
mkdir -p runs/cv/ebhi/{cbam_efficientnet_lite0,efficientnet_lite0} runs/cv/breakhis/{cbam_efficientnet_lite0,efficientnet_lite0}
EC=training/configs/ebhi_cbam_efficientnet_lite0.json
BC=training/configs/breakhis_cbam_efficientnet_lite0.json
for fold in 0 1 2 3 4; do
    run ebhi $EC cbam_efficientnet_lite0 $fold
    run breakhis $BC cbam_efficientnet_lite0 $fold
    run ebhi $EC efficientnet_lite0 $fold
    run breakhis $BC efficientnet_lite0 $fold
done
