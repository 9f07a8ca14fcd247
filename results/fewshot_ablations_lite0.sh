#!/usr/bin/env bash
# Round 8: the attention ablations of the seed claims on the pretrained backbone. Round 4's dual-attention recipe
# (training/configs/fewshot_meta_lite0.json: ImageNet CBAM Lite0, gates after stages 5 and 6, stages 5-6 + gates +
# head conv meta-trained, 600 episodes, 224 px) with each CBAM gate cut to one of its two halves; the no-attention
# arm (dual_attention_no_attention) ran in round 4. Comparison budget as there: 1 and 5 shots, the first 300 of the
# same seeded test episodes.
#   channel_only: CBAM's channel gate alone (attn_layer cbam_channel)
#   spatial_only: CBAM's spatial gate alone (attn_layer cbam_spatial)
# Run from the repo root with ../shared/data beside it: bash results/fewshot_ablations_lite0.sh
set -uo pipefail
source results/fewshot_common.sh
CMP=(--set 'eval_shots=[1,5]' --set eval_episodes=300)
for pool in both breakhis; do
    for half in channel spatial; do
        run $pool dual_attention_${half}_only "${CMP[@]}" \
            --set "backbone_args={\"embed_stages\": [4, 5], \"attn_stages\": [5, 6], \"attn_layer\": \"cbam_$half\"}"
    done
done
