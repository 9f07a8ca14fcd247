#!/usr/bin/env bash
# Round 12 (issue 12): the served BreakHis recipe (results/cv_probe_stages_lite0.sh: the frozen Lite0 probe with
# stages 2-5 beside the last map) over a second patient-grouped 5-fold partition, split seed 1. Seed 0, the
# partition of every headline row, puts 2 of the 10 benign patients in each test fold; seed 1, the smallest other
# seed, puts 3 / 1 / 2 / 2 / 2, so its fold 0 is a test split with 3 benign patients for the served bundle (chosen
# by the partition's benign-patient counts alone, before any fold was trained).
# Run from the repo root with ../shared/data beside it: bash results/cv_probe_stages_breakhis_seed1.sh
set -uo pipefail
T=".venv/bin/python -m training"
OUT=runs/cv_probe_seed1/breakhis/efficientnet_lite0_stages2345
mkdir -p $OUT
for fold in 0 1 2 3 4; do
    [ -f "$OUT/fold$fold/metrics.json" ] && continue
    $T train --config training/configs/breakhis_probe_cbam_efficientnet_lite0.json --data ../shared/data/breakhis_200x \
        --set model=efficientnet_lite0 --set cv_fold=$fold --set split_seed=1 --set epochs=0 \
        --set 'model_args={"drop_rate": 0.2, "feature_stages": [2, 3, 4, 5]}' --out "$OUT/fold$fold" \
        > "$OUT/fold$fold.log" 2>&1 || echo "failed: $OUT/fold$fold (see $OUT/fold$fold.log)"
done
