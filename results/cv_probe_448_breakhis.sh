#!/usr/bin/env bash
# Round 14 (issue 12): the served BreakHis recipe (results/cv_probe_stages_lite0.sh: the frozen Lite0 probe with
# stages 2-5 beside the last map) with the 224 px images upsampled to 448 px, on the same patient-grouped folds
# (split seeds 0 and 1). Why: BreakHis fields were shrunk from 700x460 to 224 px by the dataset's source, so nuclei
# are a few pixels wide, far smaller than the objects ImageNet features were learnt on; upsampling the input is the
# cheap way to give the frozen backbone cells at a scale it knows (the probe costs about 4x per image). Fixed before
# any fold was run. Run from the repo root with ../shared/data beside it: bash results/cv_probe_448_breakhis.sh
set -uo pipefail
T=".venv/bin/python -m training"
for seed in 0 1; do
    for fold in 0 1 2 3 4; do
        out=runs/cv_probe_448/breakhis_seed$seed/efficientnet_lite0_stages2345/fold$fold
        [ -f "$out/metrics.json" ] && continue
        mkdir -p "$(dirname "$out")"
        $T train --config training/configs/breakhis_probe_cbam_efficientnet_lite0.json --data ../shared/data/breakhis_200x \
            --set model=efficientnet_lite0 --set cv_fold=$fold --set split_seed=$seed --set epochs=0 --set image_size=448 \
            --set 'model_args={"drop_rate": 0.2, "feature_stages": [2, 3, 4, 5]}' --out "$out" > "$out.log" 2>&1 \
            || echo "failed: $out (see $out.log)"
    done
done
