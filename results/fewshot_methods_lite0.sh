#!/usr/bin/env bash
# Round 7: the two methods round 4 did not run on the pretrained backbone, with round 4's recipe otherwise
# (training/configs/fewshot_meta_lite0.json: ImageNet CBAM Lite0, stages 5-6 + gates + head conv meta-trained,
# 600 episodes, 224 px) and its comparison budget (1 and 5 shots, the first 300 of the same seeded test episodes).
#   relation: the Relation Network on the last feature map (1280 x 7 x 7), its relation module trained from scratch.
#   maml_anil: MAML with the inner loop on the linear head alone (ANIL, Raghu et al. 2020), second order, 5 inner
#     steps in training and 10 at test, batch statistics left alone (ImageNet's): the full MAML inner loop through
#     the backbone at 224 px is out of a 2-core budget, and ANIL is the variant that lets each image be embedded once.
# Run from the repo root with ../shared/data beside it: bash results/fewshot_methods_lite0.sh
set -uo pipefail
source results/fewshot_common.sh
CMP=(--set 'eval_shots=[1,5]' --set eval_episodes=300)
# the frozen ImageNet embedding with stages 2 and 3 added (the probe's stages-2-5 variant helped BreakHis): 600
# test episodes; frozen, so the pool does not matter and only the ebhi_unseen column is run
run both frozen_imagenet_stages2345 --set method=protonet --set 'method_args={}' --set backbone=efficientnet_lite0 \
    --set 'backbone_args={"embed_stages": [2, 3, 4, 5]}' --set episodes=0 --set 'eval_shots=[1,5,10]' --set eval_episodes=600
for pool in both breakhis; do
    run $pool relation "${CMP[@]}" --set method=relation --set 'method_args={"width": 64, "hidden": 8}'
    run $pool maml_anil "${CMP[@]}" --set method=maml --set 'method_args={"inner_lr": 0.5, "inner_steps": 5, "inner_steps_test": 10, "first_order": false, "adapt_prefixes": ["fc"], "transductive_bn": false}'
done
