#!/usr/bin/env bash
# Round 10 (issue 14): the breakhis->ebhi column on EfficientNet-Lite2. Meta-trained on BreakHis alone, tested on
# EBHI-Seg's high-grade IN, normal and serrated adenoma (the same seeded episodes as every row of that column):
#   dual_attention_lite2:            round 9's served recipe (results/fewshot_lite2.sh), pool BreakHis alone
#   dual_attention_gates_only_lite2: only the CBAM gates trained (round 7's results/fewshot_gates_lite0.sh, the best
#                                    Lite0 row of this column), on Lite2
# Both fixed before either was scored. Run from the repo root with ../shared/data beside it:
#   bash results/fewshot_lite2_breakhis.sh
set -uo pipefail
source results/fewshot_common.sh
LITE2_STAGES56='["_blocks.15", "_blocks.16", "_blocks.17", "_blocks.18", "_blocks.19", "_blocks.20", "_conv_head", "_bn1", "_attn"]'
run breakhis dual_attention_lite2 --set backbone=cbam_efficientnet_lite2 --set 'eval_shots=[1,5,10]' \
    --set "trainable=$LITE2_STAGES56"
run breakhis dual_attention_gates_only_lite2 --set backbone=cbam_efficientnet_lite2 --set 'eval_shots=[1,5,10]' \
    --set 'trainable=["_attn"]'
