#!/usr/bin/env bash
# Round 15 (issue 14): /adapt's heads and part choice on the taught-attention default, in-process (bench.adapter_oos).
# Run from the repo root with ../shared/data beside it: bash results/adapter_oos_taught_attention.sh
set -euo pipefail
M=model_store/fewshot_taught_attention_lite2/1
O=model_store/fewshot_dual_attention_lite2/1
export OPENBLAS_NUM_THREADS=1
P=".venv/bin/python -m bench.adapter_oos"
$P --model $M --episodes 100 --shots 1 5 10 > bench/results/adapter-oos-fewshot_taught_attention_lite2-1.jsonl
$P --model $M --episodes 100 --shots 1 5 --task breakhis_subtypes > bench/results/adapter-oos-fewshot_taught_attention_lite2-1-breakhis.jsonl
$P --model $O --episodes 100 --shots 1 5 --task breakhis_subtypes > bench/results/adapter-oos-fewshot_dual_attention_lite2-1-breakhis.jsonl
$P --model $M --episodes 600 --shots 5 > bench/results/adapter-oos-fewshot_taught_attention_lite2-1-600.jsonl
$P --model $M --episodes 100 --shots 1 5 --augment dihedral > bench/results/adapter-oos-fewshot_taught_attention_lite2-1-dihedral.jsonl
# robustness of the 5-shot figure: other episodes (seed 1), and every image of the three classes as the pool (queries
# then weighted toward high-grade IN, 186 images against 76 and 58)
$P --model $M --episodes 300 --shots 5 --seed 1 > bench/results/adapter-oos-fewshot_taught_attention_lite2-1-seed1.jsonl
$P --model $M --episodes 300 --shots 5 --per-class 200 > bench/results/adapter-oos-fewshot_taught_attention_lite2-1-allimages.jsonl
