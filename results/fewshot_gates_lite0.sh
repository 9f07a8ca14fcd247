#!/usr/bin/env bash
# Round 7: meta-train only the attention gates. Round 4's dual-attention recipe (training/configs/fewshot_meta_lite0.json)
# with `trainable` cut to the CBAM gates (`_attn`): stages 0-6, the head conv and every BatchNorm stay ImageNet's, and
# since the gates start as pass-through, step 0 is the frozen ImageNet embedding. Meta-trained on BreakHis alone, the
# full recipe lost 6 points on EBHI-Seg against the frozen features (65.6 vs 71.9 % at 5 shots); this asks whether
# attention alone can learn from breast tissue without narrowing the embedding. Same episodes, seed and test as round 4.
#   breakhis: BreakHis alone -> column breakhis->ebhi;  both: BreakHis + EBHI-Seg's 3 seen classes -> column ebhi_unseen
# Run from the repo root with ../shared/data beside it: bash results/fewshot_gates_lite0.sh
set -uo pipefail
source results/fewshot_common.sh
for pool in breakhis both; do
    run $pool dual_attention_gates_only --set 'trainable=["_attn"]' --set 'eval_shots=[1,5,10]'
done
