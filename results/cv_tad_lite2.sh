#!/usr/bin/env bash
# Round 11 (issue 12): the served EBHI-Seg recipe (results/tad_long_lite2.sh: CBAM on ImageNet EfficientNet-Lite2,
# teacher attention distillation from the EBHI-Seg masks, 16 epochs) over the specimen-grouped 5-fold CV, the same
# folds as every row of the headline table. Fold 0 is round 9's run (the served network), its files from
# results/supervised/ebhi_tad_cbam_efficientnet_lite2_16ep and its split from the served bundle; folds 1-4 train
# here (round 9 trained fold 0 at 7 images/s in 30 minutes; this machine now runs at about 15).
# MODEL (default cbam_efficientnet_lite2): efficientnet_lite2 runs the plain twin, the same recipe without CBAM,
# on all 5 folds. Run from the repo root with ../shared/data beside it: bash results/cv_tad_lite2.sh [MODEL]
set -uo pipefail
T=".venv/bin/python -m training"
MODEL=${1:-cbam_efficientnet_lite2}
OUT=runs/cv_tad/ebhi/tad_$MODEL
mkdir -p $OUT
if [ "$MODEL" = cbam_efficientnet_lite2 ] && [ ! -f $OUT/fold0/metrics.json ]; then
    mkdir -p $OUT/fold0
    cp results/supervised/ebhi_tad_cbam_efficientnet_lite2_16ep/*.json $OUT/fold0/
    cp model_store/ebhi_cbam_efficientnet_lite2/3/split.json $OUT/fold0/  # every version of it has fold 0's split
fi
for fold in 0 1 2 3 4; do
    [ -f $OUT/fold$fold/metrics.json ] && continue
    $T train --config training/configs/ebhi_cbam_efficientnet_lite0.json --data ../shared/data/ebhi_seg \
        --set model=$MODEL --set cv_fold=$fold --set epochs=16 --set aux_loss=tad \
        --set mask_root=../shared/data/ebhi_seg_masks --set name=ebhi_tad_$MODEL \
        --out $OUT/fold$fold > $OUT/fold$fold.log 2>&1 || echo "failed: $OUT/fold$fold (see $OUT/fold$fold.log)"
done
