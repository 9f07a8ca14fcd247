#!/usr/bin/env bash
# Round 6: the headline EBHI-Seg fine-tuning recipes (training/configs/ebhi_cbam_efficientnet_lite0.json and its
# plain twin) on the same 5 specimen-grouped folds with twice the budget, 16 epochs instead of 8: at epoch 8 every
# fold's validation balanced accuracy was still rising (results/supervised/cv/ebhi/*/fold*/history.json).
# The plain twin runs first, all folds, then the CBAM network. Nothing else in the recipe changes.
# Run from the repo root with ../shared/data beside it: bash results/cv_long_lite0.sh
set -uo pipefail
T=".venv/bin/python -m training"
EPOCHS=16
for model in efficientnet_lite0 cbam_efficientnet_lite0; do
    OUT=runs/cv_long/ebhi/$model
    mkdir -p $OUT
    for fold in 0 1 2 3 4; do
        [ -f $OUT/fold$fold/metrics.json ] && continue
        $T train --config training/configs/ebhi_cbam_efficientnet_lite0.json --data ../shared/data/ebhi_seg \
            --set model=$model --set cv_fold=$fold --set epochs=$EPOCHS --out $OUT/fold$fold > $OUT/fold$fold.log 2>&1 \
            || echo "failed: $OUT/fold$fold (see $OUT/fold$fold.log)"
    done
done
