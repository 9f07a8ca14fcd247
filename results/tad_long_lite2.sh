#!/usr/bin/env bash
# Round 9 (issue 12): results/tad_long_lite0.sh's run (the served EBHI recipe: CBAM, teacher attention distillation
# from the EBHI-Seg masks, 16 epochs, fold 0) with the Lite2 backbone instead of Lite0 (cbam_efficientnet_lite2),
# nothing else changed; exported to a scratch store with --masks, which scores Grad-CAM on the fold's test split.
# Run from the repo root with ../shared/data beside it: bash results/tad_long_lite2.sh
set -euo pipefail
T=".venv/bin/python -m training"
OUT=runs/tad_long/ebhi_tad_cbam_efficientnet_lite2
mkdir -p runs/tad_long
[ -f $OUT/metrics.json ] || $T train --config training/configs/ebhi_cbam_efficientnet_lite0.json --data ../shared/data/ebhi_seg \
    --set model=cbam_efficientnet_lite2 --set cv_fold=0 --set epochs=16 --set aux_loss=tad \
    --set mask_root=../shared/data/ebhi_seg_masks --set name=ebhi_tad_cbam_efficientnet_lite2 --out $OUT > $OUT.log 2>&1
[ -d runs/tad_long/store/ebhi_tad_cbam_efficientnet_lite2 ] || $T export --run $OUT --store runs/tad_long/store \
    --name ebhi_tad_cbam_efficientnet_lite2 --masks ../shared/data/ebhi_seg_masks \
    --pixel-size-um 1.2 1.2 --pixel-size-estimated \
    --pixel-size-source "estimate: EBHI-Seg 224 px images, ~1.2 um/px from colonic crypt size (the dataset paper gives no pixel size)"
