#!/usr/bin/env bash
# Round 9: the frozen ImageNet embedding (no meta-training; stages 4, 5 and the head conv, as frozen_imagenet in
# results/fewshot_lite0.sh) on the two larger EfficientNet-Lite backbones, same test episodes (ebhi_unseen,
# 600 per cell): the baseline that meta-training has not beaten on Lite0, measured on a bigger backbone.
# Frozen runs have no training pool, so one pool holds them (both); the ebhi pool's 5-way test on BreakHis's
# subtypes (results/fewshot_ebhi_to_breakhis_lite0.sh) is run for Lite2 too.
# Run from the repo root with ../shared/data beside it: bash results/fewshot_lite12_frozen.sh
set -uo pipefail
source results/fewshot_common.sh
for model in efficientnet_lite1 efficientnet_lite2; do
    run both frozen_imagenet_${model#efficientnet_} --set method=protonet --set 'method_args={}' --set backbone=$model \
        --set 'backbone_args={"embed_stages": [4, 5]}' --set episodes=0 --set 'eval_shots=[1,5,10]' --set 'trainable=[]'
done
run ebhi frozen_imagenet_lite2_5way --set n_way=5 --set 'eval_shots=[1,5]' --set eval_episodes=600 \
    --set method=protonet --set 'method_args={}' --set backbone=efficientnet_lite2 \
    --set 'backbone_args={"embed_stages": [4, 5]}' --set episodes=0 --set 'trainable=[]'
