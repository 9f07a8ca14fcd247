#!/usr/bin/env bash
# Round 11 (issue 12): results/cv_tad_lite2.sh's folds 1-4 made into bundles the way the default was made
# (export with --masks, which scores Grad-CAM on the fold's test split; then bench.tta, which averages the image
# with the flip that scores best on the fold's own validation split), in a scratch store; fold 0 is the served
# default itself (float16 weights; folds 1-4 float32). Then bench.folds: the five bundles' figures side by side.
# Run after results/cv_tad_lite2.sh: bash results/cv_tad_lite2_served.sh
set -euo pipefail
T=".venv/bin/python -m training"
RUNS=runs/cv_tad/ebhi/tad_cbam_efficientnet_lite2
STORE=runs/cv_tad/store
# fold 0: the two-view default of rounds 10-11, removed from the store in round 12 (/3 averages four views): from git
mkdir -p runs/scratch/store/ebhi_cbam_efficientnet_lite2/2
for f in gradcam.onnx manifest.json model.onnx split.json; do
    git show 8fe8486:model_store/ebhi_cbam_efficientnet_lite2/2/$f > runs/scratch/store/ebhi_cbam_efficientnet_lite2/2/$f
done
BUNDLES=(runs/scratch/store/ebhi_cbam_efficientnet_lite2/2)
for fold in 1 2 3 4; do
    NAME=ebhi_tad_cbam_efficientnet_lite2_fold$fold
    [ -d $STORE/$NAME/1 ] || $T export --run $RUNS/fold$fold --store $STORE --name $NAME \
        --masks ../shared/data/ebhi_seg_masks --pixel-size-um 1.2 1.2 --pixel-size-estimated \
        --pixel-size-source "estimate: EBHI-Seg 224 px images, ~1.2 um/px from colonic crypt size (the dataset paper gives no pixel size)"
    [ -d $STORE/$NAME/2 ] || .venv/bin/python -m bench.tta $STORE/$NAME/1 --store $STORE --version 2
    BUNDLES+=($STORE/$NAME/2)
done
mkdir -p results/supervised/cv_tad_lite2
.venv/bin/python -m bench.folds "${BUNDLES[@]}" --json results/supervised/cv_tad_lite2/served_folds.json \
    > results/supervised/cv_tad_lite2/served_folds.md
