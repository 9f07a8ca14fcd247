#!/usr/bin/env bash
# Round 4: few-shot meta-training on the pretrained backbone (training/configs/fewshot_meta_lite0.json: ImageNet
# CBAM EfficientNet-Lite0, stages 5-6 + head conv meta-trained, 224 px), 600 episodes per run, one seed.
# Two training pools, one test: EBHI-Seg's unseen classes (high-grade IN, normal, serrated adenoma).
#   both / breakhis: the two pools of results/fewshot_common.sh
# Run from the repo root with ../shared/data beside it: bash results/fewshot_lite0.sh
set -uo pipefail
source results/fewshot_common.sh
# the served embedding's recipe (dual attention), and its leave-BreakHis-in / leave-EBHI-out twin: 1, 5, 10 shots
for pool in both breakhis; do run $pool dual_attention --set 'eval_shots=[1,5,10]'; done
# the method comparison: 1 and 5 shots, 300 test episodes
CMP=(--set 'eval_shots=[1,5]' --set eval_episodes=300)
for pool in both breakhis; do
    run $pool protonet --set method=protonet --set 'method_args={"scale": 10.0}' "${CMP[@]}"
    run $pool dual_attention_no_attention --set backbone=efficientnet_lite0 \
        --set 'backbone_args={"embed_stages": [4, 5]}' "${CMP[@]}"
done
# the frozen ImageNet embedding (no meta-training) on the same episodes: the baseline every method must beat
for pool in both breakhis; do
    run $pool frozen_imagenet --set method=protonet --set 'method_args={}' --set backbone=efficientnet_lite0 \
        --set 'backbone_args={"embed_stages": [4, 5]}' --set episodes=0 --set 'eval_shots=[1,5,10]'
done
# The table of these runs and round 7's (results/fewshot/lite0/table.md): the fewshot-eval command in
# results/commands.sh's Round 7 block.
