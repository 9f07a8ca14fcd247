#!/usr/bin/env bash
# Round 4: teacher attention distillation over the specimen-grouped 5-fold CV of EBHI-Seg (the served EBHI recipe,
# training/configs/ebhi_cbam_efficientnet_lite0.json, with aux_loss=tad and the EBHI-Seg masks), to compare with
# the same recipe without TAD (results/cv_lite0.sh). Fold 0 is results/tad_lite0.sh's run (the served /3), copied.
# Run from the repo root with ../shared/data beside it: bash results/cv_tad_lite0.sh
set -uo pipefail
T=".venv/bin/python -m training"
OUT=runs/cv_tad/ebhi/tad_cbam_efficientnet_lite0
mkdir -p $OUT
[ -f $OUT/fold0/metrics.json ] || cp -r runs/tad/ebhi_tad_cbam_efficientnet_lite0 $OUT/fold0
for fold in 1 2 3 4; do
    [ -f $OUT/fold$fold/metrics.json ] && continue
    $T train --config training/configs/ebhi_cbam_efficientnet_lite0.json --data ../shared/data/ebhi_seg \
        --set cv_fold=$fold --set aux_loss=tad --set mask_root=../shared/data/ebhi_seg_masks \
        --set name=ebhi_tad_cbam_efficientnet_lite0 --out $OUT/fold$fold > $OUT/fold$fold.log 2>&1 \
        || echo "failed: $OUT/fold$fold (see $OUT/fold$fold.log)"
done
