#!/usr/bin/env bash
# Round 9 (issue 12): results/tad_long_lite0.sh's run (the served EBHI recipe: CBAM, teacher attention distillation
# from the EBHI-Seg masks, 16 epochs, fold 0) with the Lite2 backbone instead of Lite0 (cbam_efficientnet_lite2),
# nothing else changed; exported to a scratch store with --masks, which scores Grad-CAM on the fold's test split.
# Run from the repo root with ../shared/data beside it: bash results/tad_long_lite2.sh
exec bash "$(dirname "$0")/tad_long_lite0.sh" cbam_efficientnet_lite2
