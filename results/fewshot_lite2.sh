#!/usr/bin/env bash
# Round 9 (issue 14): the served embedding's recipe (results/fewshot_lite0.sh's dual_attention: CBAM gates, stages
# 5-6 and the head conv meta-trained, 600 episodes, both pools' classes) on EfficientNet-Lite2, whose frozen
# ImageNet embedding (results/fewshot_lite12_frozen.sh) is ahead of every Lite0 method on ebhi_unseen. Lite2's
# stages 5-6 are blocks 15-20 (Lite0's are 11-15). Nothing else changed.
# Run from the repo root with ../shared/data beside it: bash results/fewshot_lite2.sh
set -uo pipefail
source results/fewshot_common.sh
run both dual_attention_lite2 --set backbone=cbam_efficientnet_lite2 --set 'eval_shots=[1,5,10]' \
    --set 'trainable=["_blocks.15", "_blocks.16", "_blocks.17", "_blocks.18", "_blocks.19", "_blocks.20", "_conv_head", "_bn1", "_attn"]'
