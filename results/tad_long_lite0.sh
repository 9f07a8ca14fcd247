#!/usr/bin/env bash
# Round 6 (issue 12): results/tad_lite0.sh's run (the served EBHI recipe with teacher attention distillation, fold 0)
# with the 16-epoch budget of results/cv_long_lite0.sh; exported to a scratch store with --masks, which scores
# Grad-CAM on the fold's test split (pointing game and top-20% coverage beside a random map) into the manifest.
# Run from the repo root with ../shared/data beside it: bash results/tad_long_lite0.sh [MODEL]
# (MODEL, default the config's cbam_efficientnet_lite0: the backbone, nothing else changed; results/tad_long_lite2.sh)
set -euo pipefail
T=".venv/bin/python -m training"
MODEL=${1:-cbam_efficientnet_lite0}
NAME=ebhi_tad_$MODEL
OUT=runs/tad_long/$NAME
mkdir -p runs/tad_long
[ -f $OUT/metrics.json ] || $T train --config training/configs/ebhi_cbam_efficientnet_lite0.json --data ../shared/data/ebhi_seg \
    --set model=$MODEL --set cv_fold=0 --set epochs=16 --set aux_loss=tad --set mask_root=../shared/data/ebhi_seg_masks \
    --set name=$NAME --out $OUT > $OUT.log 2>&1
[ -d runs/tad_long/store/$NAME ] || $T export --run $OUT --store runs/tad_long/store \
    --name $NAME --masks ../shared/data/ebhi_seg_masks \
    --pixel-size-um 1.2 1.2 --pixel-size-estimated \
    --pixel-size-source "estimate: EBHI-Seg 224 px images, ~1.2 um/px from colonic crypt size (the dataset paper gives no pixel size)"
