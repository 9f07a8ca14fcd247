#!/usr/bin/env bash
# Round 5: equal-weight ensembles of the methods already trained on the same grouped 5-fold CV
# (results/cv_lite0.sh, results/cv_probe_lite0.sh, results/cv_tad_lite0.sh): no training, inference only.
# Run from the repo root with ../shared/data beside it: bash results/cv_ensemble.sh
set -euo pipefail
T=".venv/bin/python -m training"
OUT=results/supervised/cv_ensemble
$T cv-ensemble runs/cv/ebhi/cbam_efficientnet_lite0 runs/cv/ebhi/efficientnet_lite0 \
    runs/cv_tad/ebhi/tad_cbam_efficientnet_lite0 --out $OUT/ebhi_finetuned.md
$T cv-ensemble runs/cv/ebhi/cbam_efficientnet_lite0 runs/cv/ebhi/efficientnet_lite0 \
    runs/cv_tad/ebhi/tad_cbam_efficientnet_lite0 runs/cv_probe/ebhi/cbam_efficientnet_lite0 \
    runs/cv_probe/ebhi/efficientnet_lite0 runs/cv_probe/ebhi/efficientnet_lite0_stages45 --out $OUT/ebhi_all.md
$T cv-ensemble runs/cv/breakhis/cbam_efficientnet_lite0 runs/cv/breakhis/efficientnet_lite0 \
    runs/cv_probe/breakhis/efficientnet_lite0_stages45 --out $OUT/breakhis_best3.md
$T cv-ensemble runs/cv/breakhis/cbam_efficientnet_lite0 runs/cv/breakhis/efficientnet_lite0 \
    runs/cv_probe/breakhis/cbam_efficientnet_lite0 runs/cv_probe/breakhis/efficientnet_lite0 \
    runs/cv_probe/breakhis/efficientnet_lite0_stages45 --out $OUT/breakhis_all.md
