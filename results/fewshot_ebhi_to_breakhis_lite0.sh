#!/usr/bin/env bash
# Round 8: the other leave-one-dataset-out direction, 5-way. Meta-trained on EBHI-Seg alone (all six classes),
# tested on BreakHis's 8 subtypes (5 drawn per episode; the ebhi pool of results/fewshot_common.sh), 1 and 5
# shots, 600 test episodes. Round 4's dual-attention recipe otherwise
# (training/configs/fewshot_meta_lite0.json), meta-trained 5-way like its test; beside it the frozen ImageNet
# embedding on the same episodes. Adenosis, lobular carcinoma and phyllodes tumour have one patient each: their
# support and query share it (each evaluation's shared_group_classes says so).
# Run from the repo root with ../shared/data beside it: bash results/fewshot_ebhi_to_breakhis_lite0.sh
set -uo pipefail
source results/fewshot_common.sh
FIVE=(--set n_way=5 --set 'eval_shots=[1,5]' --set eval_episodes=600)
run ebhi frozen_imagenet_5way "${FIVE[@]}" --set method=protonet --set 'method_args={}' \
    --set backbone=efficientnet_lite0 --set 'backbone_args={"embed_stages": [4, 5]}' --set episodes=0
run ebhi dual_attention_5way "${FIVE[@]}"
