#!/usr/bin/env bash
# Round 15 (issue 14): the embedding pools where the experts' masks say the tissue that matters is.
# training/configs/fewshot_taught_attention_lite2.json: frozen ImageNet EfficientNet-Lite2, a pooling attention
# (models/layers/taught_attention.py) taught by EBHI-Seg's masks of the training classes only, no episode trained.
#   both/taught_attention_lite2:           the served recipe; ebhi_unseen 3-way, the same 600 test episodes as every
#                                          row of that column
#   both/frozen_imagenet_lite2_stages2345: the same stages pooled by plain means, no attention (what the attention adds)
#   ebhi/taught_attention_lite2_5way:      the other leave-one-dataset-out direction: taught by the masks of all six
#                                          EBHI-Seg classes, 5-way on BreakHis's 8 subtypes (as results/fewshot_ebhi_to_breakhis_lite0.sh)
# No breakhis->ebhi row: BreakHis has no masks to teach with.
# Run from the repo root with ../shared/data beside it: bash results/fewshot_taught_attention.sh
set -uo pipefail
T=".venv/bin/python -m training"
C=training/configs/fewshot_taught_attention_lite2.json
fs() {  # run directory under runs/fs_lite0 [extra --set arguments]; skipped when evaluated already
    local out=runs/fs_lite0/$1
    [ -f "$out/eval.json" ] && return 0
    mkdir -p "$(dirname "$out")"
    $T fewshot --config $C --eval --out "$out" "${@:2}" > "$out.log" 2>&1 || echo "failed: $out (see $out.log)"
}
fs both/taught_attention_lite2
fs both/frozen_imagenet_lite2_stages2345 --set name=frozen_imagenet_lite2_stages2345 --set attention_epochs=0 \
    --set 'backbone_args={"embed_stages": [2, 3, 4, 5]}'
fs ebhi/taught_attention_lite2_5way --set name=taught_attention_lite2_5way --set n_way=5 --set 'eval_shots=[1,5]' \
    --set 'train=[{"name": "ebhi_all", "dataset": "ebhi_seg", "masks": "ebhi_seg_masks", "classes": ["adenocarcinoma", "high_grade_in", "low_grade_in", "normal", "polyp", "serrated_adenoma"], "q_query": 10}]' \
    --set 'tests=[{"name": "ebhi->breakhis", "dataset": "breakhis_200x", "classes": ["adenosis", "ductal_carcinoma", "fibroadenoma", "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma", "phyllodes_tumor", "tubular_adenoma"], "q_query": 9}]'
