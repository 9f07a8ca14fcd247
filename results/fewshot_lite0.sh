#!/usr/bin/env bash
# Round 4: few-shot meta-training on the pretrained backbone (training/configs/fewshot_meta_lite0.json: ImageNet
# CBAM EfficientNet-Lite0, stages 5-6 + head conv meta-trained, 224 px), 600 episodes per run, one seed.
# Two training pools, one test: EBHI-Seg's unseen classes (high-grade IN, normal, serrated adenoma).
#   both:     BreakHis (8 subtypes) + EBHI-Seg adenocarcinoma / low-grade IN / polyp -> column ebhi_unseen
#   breakhis: BreakHis alone                                                        -> column breakhis->ebhi
# Run from the repo root with ../shared/data beside it: bash results/fewshot_lite0.sh
set -uo pipefail
T=".venv/bin/python -m training"
C=training/configs/fewshot_meta_lite0.json
OUT=runs/fs_lite0
UNSEEN='{"dataset": "ebhi_seg", "classes": ["high_grade_in", "normal", "serrated_adenoma"], "q_query": 15}'
BREAKHIS='{"name": "breakhis_all", "dataset": "breakhis_200x", "classes": ["adenosis", "ductal_carcinoma", "fibroadenoma", "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma", "phyllodes_tumor", "tubular_adenoma"]}'
run() {  # pool name [extra --set arguments]
    local pool=$1 name=$2 out=$OUT/$1/$2
    [ -f "$out/eval.json" ] && return 0
    local pool_args=(--set "tests=[{\"name\": \"ebhi_unseen\", ${UNSEEN:1}]")
    [[ $pool == breakhis ]] && pool_args=(--set "train=[$BREAKHIS]" --set "tests=[{\"name\": \"breakhis->ebhi\", ${UNSEEN:1}]")
    mkdir -p "$(dirname "$out")"
    $T fewshot --config $C --eval --out "$out" --set name="$name" "${pool_args[@]}" "${@:3}" > "$out.log" 2>&1 \
        || echo "failed: $out (see $out.log)"
}
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
$T fewshot-eval --reuse --run $OUT/{both,breakhis}/{frozen_imagenet,protonet,dual_attention_no_attention,dual_attention} \
    --table results/fewshot/lite0/table
