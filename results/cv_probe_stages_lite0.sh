#!/usr/bin/env bash
# Round 6: results/cv_probe_lite0.sh's stages-4/5 probe with the lower stages 2 and 3 beside it (feature_stages
# [2, 3, 4, 5]), same folds and recipe: on BreakHis a colour + texture baseline beats every network, and the early
# stages carry colour and fine texture. Fixed before any fold was run; both datasets reported.
# Run from the repo root with ../shared/data beside it: bash results/cv_probe_stages_lite0.sh [MODEL]
# (MODEL, default efficientnet_lite0: the backbone, the same recipe and folds; results/cv_probe_lite2_stages.sh)
set -uo pipefail
T=".venv/bin/python -m training"
MODEL=${1:-efficientnet_lite0}
for fold in 0 1 2 3 4; do
    for name in breakhis ebhi; do
        out=runs/cv_probe/$name/${MODEL}_stages2345/fold$fold
        [ -f "$out/metrics.json" ] && continue
        data=../shared/data/ebhi_seg; [[ $name == breakhis ]] && data=../shared/data/breakhis_200x
        mkdir -p "$(dirname "$out")"
        $T train --config "training/configs/${name}_probe_cbam_efficientnet_lite0.json" --data $data \
            --set model=$MODEL --set cv_fold=$fold --set epochs=0 \
            --set 'model_args={"drop_rate": 0.2, "feature_stages": [2, 3, 4, 5]}' --out "$out" > "$out.log" 2>&1 \
            || echo "failed: $out (see $out.log)"
    done
done
