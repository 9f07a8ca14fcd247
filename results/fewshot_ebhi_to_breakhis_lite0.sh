#!/usr/bin/env bash
# Round 8: the other leave-one-dataset-out direction, 5-way. Meta-trained on EBHI-Seg alone (all six classes),
# tested on BreakHis's 8 subtypes (5 drawn per episode), 1 and 5 shots, 600 test episodes, 9 queries per class
# (phyllodes tumour has 14 images at 200x: 5 + 9). Round 4's dual-attention recipe otherwise
# (training/configs/fewshot_meta_lite0.json), meta-trained 5-way like its test; beside it the frozen ImageNet
# embedding on the same episodes. Adenosis, lobular carcinoma and phyllodes tumour have one patient each: their
# support and query share it (each evaluation's shared_group_classes says so).
# Run from the repo root with ../shared/data beside it: bash results/fewshot_ebhi_to_breakhis_lite0.sh
set -uo pipefail
source results/fewshot_common.sh
EBHI='{"name": "ebhi_all", "dataset": "ebhi_seg", "classes": ["adenocarcinoma", "high_grade_in", "low_grade_in", "normal", "polyp", "serrated_adenoma"], "q_query": 10}'
TEST='{"name": "ebhi->breakhis", "dataset": "breakhis_200x", "classes": ["adenosis", "ductal_carcinoma", "fibroadenoma", "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma", "phyllodes_tumor", "tubular_adenoma"], "q_query": 9}'
FIVE=(--set "train=[$EBHI]" --set "tests=[$TEST]" --set n_way=5 --set 'eval_shots=[1,5]' --set eval_episodes=600)
out=$OUT/ebhi
mkdir -p $out
[ -f $out/frozen_imagenet_5way/eval.json ] || $T fewshot --config $C --eval --out $out/frozen_imagenet_5way \
    --set name=frozen_imagenet_5way "${FIVE[@]}" --set method=protonet --set 'method_args={}' \
    --set backbone=efficientnet_lite0 --set 'backbone_args={"embed_stages": [4, 5]}' --set episodes=0 \
    > $out/frozen_imagenet_5way.log 2>&1 || echo "failed: $out/frozen_imagenet_5way"
[ -f $out/dual_attention_5way/eval.json ] || $T fewshot --config $C --eval --out $out/dual_attention_5way \
    --set name=dual_attention_5way "${FIVE[@]}" > $out/dual_attention_5way.log 2>&1 || echo "failed: $out/dual_attention_5way"
