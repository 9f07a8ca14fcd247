#!/usr/bin/env bash
# Round 8: a second training seed (seed 1: other meta-training episodes and augmentations; the test episodes are
# the same for every run, training.fewshot.evaluate.EVAL_SEED) for the three
# rows the seed claims rest on, with EBHI-Seg's seen classes in the pool (column ebhi_unseen): the served
# dual-attention recipe, ProtoNet, and the same learner without attention. Round 4's recipe and the comparison
# budget (1 and 5 shots, 300 test episodes); seed 0 is round 4's runs.
# Run from the repo root with ../shared/data beside it: bash results/fewshot_seeds_lite0.sh
set -uo pipefail
source results/fewshot_common.sh
CMP=(--set 'eval_shots=[1,5]' --set eval_episodes=300 --set seed=1)
run both dual_attention_seed1 "${CMP[@]}"
run both protonet_seed1 --set method=protonet --set 'method_args={"scale": 10.0}' "${CMP[@]}"
run both dual_attention_no_attention_seed1 --set backbone=efficientnet_lite0 \
    --set 'backbone_args={"embed_stages": [4, 5]}' "${CMP[@]}"
