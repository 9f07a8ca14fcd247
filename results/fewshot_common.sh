# Sourced by the few-shot scripts (results/fewshot_*.sh): the recipe, the pools and one run.
#   both:     BreakHis (8 subtypes) + EBHI-Seg adenocarcinoma / low-grade IN / polyp -> column ebhi_unseen
#   breakhis: BreakHis alone                                                        -> column breakhis->ebhi
# Both columns test on EBHI-Seg's unseen high-grade IN, normal and serrated adenoma.
#   ebhi:     EBHI-Seg alone (all six classes)                                      -> column ebhi->breakhis
# which tests on BreakHis's 8 subtypes, 9 queries per class (phyllodes tumour has 14 images at 200x: 5 + 9).
T=".venv/bin/python -m training"
C=training/configs/fewshot_meta_lite0.json
OUT=runs/fs_lite0
UNSEEN='{"dataset": "ebhi_seg", "classes": ["high_grade_in", "normal", "serrated_adenoma"], "q_query": 15}'
BREAKHIS='{"name": "breakhis_all", "dataset": "breakhis_200x", "classes": ["adenosis", "ductal_carcinoma", "fibroadenoma", "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma", "phyllodes_tumor", "tubular_adenoma"]}'
EBHI_ALL='{"name": "ebhi_all", "dataset": "ebhi_seg", "classes": ["adenocarcinoma", "high_grade_in", "low_grade_in", "normal", "polyp", "serrated_adenoma"], "q_query": 10}'
BREAKHIS_TEST='{"name": "ebhi->breakhis", "dataset": "breakhis_200x", "classes": ["adenosis", "ductal_carcinoma", "fibroadenoma", "lobular_carcinoma", "mucinous_carcinoma", "papillary_carcinoma", "phyllodes_tumor", "tubular_adenoma"], "q_query": 9}'
run() {  # pool name [extra --set arguments]; skipped when the run has its evaluation already
    local pool=$1 name=$2 out=$OUT/$1/$2
    [ -f "$out/eval.json" ] && return 0
    local pool_args=(--set "tests=[{\"name\": \"ebhi_unseen\", ${UNSEEN:1}]")
    [[ $pool == breakhis ]] && pool_args=(--set "train=[$BREAKHIS]" --set "tests=[{\"name\": \"breakhis->ebhi\", ${UNSEEN:1}]")
    [[ $pool == ebhi ]] && pool_args=(--set "train=[$EBHI_ALL]" --set "tests=[$BREAKHIS_TEST]")
    mkdir -p "$(dirname "$out")"
    $T fewshot --config $C --eval --out "$out" --set name="$name" "${pool_args[@]}" "${@:3}" > "$out.log" 2>&1 \
        || echo "failed: $out (see $out.log)"
}
