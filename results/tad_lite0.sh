#!/usr/bin/env bash
# Round 4 (issue 12, Grad-CAM localisation): the served EBHI default's recipe (training/configs/ebhi_cbam_efficientnet_lite0.json,
# fold 0 of the specimen-grouped CV) with teacher attention distillation added: stage 4's activation map learns the
# EBHI-Seg mask, the head conv's map (the one Grad-CAM explains) learns stage 4's. Same fold, budget and seed as the
# served run, so the difference is the loss. Exported to a scratch store with --masks, which scores Grad-CAM on the
# fold's test split (pointing game and top-20% coverage beside a random map) into the manifest.
# Run from the repo root with ../shared/data beside it: bash results/tad_lite0.sh
set -euo pipefail
T=".venv/bin/python -m training"
OUT=runs/tad/ebhi_tad_cbam_efficientnet_lite0
mkdir -p runs/tad
[ -f $OUT/metrics.json ] || $T train --config training/configs/ebhi_cbam_efficientnet_lite0.json --data ../shared/data/ebhi_seg \
    --set cv_fold=0 --set aux_loss=tad --set mask_root=../shared/data/ebhi_seg_masks \
    --set name=ebhi_tad_cbam_efficientnet_lite0 --out $OUT > $OUT.log 2>&1
$T export --run $OUT --store runs/tad/store --name ebhi_tad_cbam_efficientnet_lite0 --masks ../shared/data/ebhi_seg_masks \
    --pixel-size-um 1.2 1.2 --pixel-size-estimated \
    --pixel-size-source "estimate: EBHI-Seg 224 px images, ~1.2 um/px from colonic crypt size (the dataset paper gives no pixel size)"
