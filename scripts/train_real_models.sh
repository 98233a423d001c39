#!/usr/bin/env bash
# Train the models of real anatomy (issue 15) on the project's 2-core CPU machine, one at a time,
# each resumable (re-run the same line with RESUME=1 after an interruption).
#
#   bash scripts/train_real_models.sh acdc            # ACDC cine cardiac MR (about 1 h 50)
#   RESUME=1 bash scripts/train_real_models.sh acdc   # continue from its checkpoint
#   bash scripts/train_real_models.sh openkbp|chaos|hc18
#   bash scripts/train_real_models.sh acdc-v2          # ACDC v2: from v1's weights, bf16, 9 000 steps
#   bash scripts/train_real_models.sh openkbp-v2       # OpenKBP v2: from v1's weights, bf16, 12 000 steps
#   bash scripts/train_real_models.sh openkbp-25d      # OpenKBP 2.5D (2 neighbouring slices a side), from v2
#   bash scripts/train_real_models.sh openkbp-coronal  # OpenKBP coronal 2D model (to average with the axial one)
#   bash scripts/train_real_models.sh openkbp-axial-class  # OpenKBP 2.5D axial from v5, class-balanced crops
#   bash scripts/train_real_models.sh acdc-scribbles   # ACDC from its real scribbles only (issue 13)
#   bash scripts/train_real_models.sh acdc-pseudo      # ACDC from random-walker pseudo-labels of its scribbles
#
# The test patients of each dataset (napari_attnseg/benchmark/splits.py) are left out of the
# training folder entirely: they are used neither for training nor for model selection. The
# training folder holds symbolic links into ../shared/data (nothing is copied).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${ATTNSEG_DATA:-../shared/data}
WORK=${WORK:-/tmp/attnseg_real}
PY=${PY:-.venv/bin/python}
ATTNSEG=${ATTNSEG:-.venv/bin/attnseg}
RES=""
[ "${RESUME:-0}" = "1" ] && RES="--resume"
mkdir -p "$WORK"

subset() {  # subset DATASET -> $WORK/DATASET_train (training patients only)
    "$PY" -c "
import sys
from napari_attnseg.benchmark.splits import split_subjects, write_subset
train, test = split_subjects(sys.argv[1])
write_subset(sys.argv[1], sys.argv[2], train)
print(len(train), 'training subjects;', len(test), 'test subjects:', ' '.join(test))
" "$DATA/$1" "$WORK/$1_train"
}

case "${1:-acdc}" in
acdc)
    subset acdc
    # 64 training patients (x2 phases); 10 % of them (6 patients) validate for model selection.
    "$ATTNSEG" train "$WORK/acdc_train" -o "$WORK/acdc-cardiac-mr-2d" --checkpoint-dir "$WORK/acdc.ckpt" $RES \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 224 224 --batch-size 8 \
        --epochs ${ACDC_EPOCHS:-18} --steps-per-epoch 250 --max-seconds ${ACDC_SECONDS:-8400} --val-fraction 0.1 --patience 0 \
        --seed 0 --threads 2 -q
    ;;
acdc-v2)
    subset acdc
    # v2 (session 7): warm start from the shipped v1 weights, the same split and validation
    # patients, bf16 autocast (about 1.9x faster per step than fp32 on CPUs with AMX:
    # benchmarks/bench_training.py), LR 5e-4, 9 000 more steps.
    "$ATTNSEG" train "$WORK/acdc_train" -o "$WORK/acdc-cardiac-mr-2d-v2" --checkpoint-dir "$WORK/acdc-v2.ckpt" $RES \
        --init-model acdc-cardiac-mr-2d@1 --precision bf16 --lr 5e-4 \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 224 224 --batch-size 8 \
        --epochs ${ACDC_EPOCHS:-36} --steps-per-epoch 250 --max-seconds ${ACDC_SECONDS:-7200} --val-fraction 0.1 --patience 0 \
        --seed 0 --threads 2 -q
    ;;
acdc-scribbles)
    subset acdc
    # Issue 13 (a): the same 64 training patients, trained from their real scribbles only
    # (scribblesTr, 4 = not annotated): partial cross-entropy + the gated-CRF term; validation
    # and model selection on the validation patients' scribbles too (no full mask is used).
    "$ATTNSEG" train "$WORK/acdc_train" -o "$WORK/acdc-scribbles-2d" --checkpoint-dir "$WORK/acdc-scribbles.ckpt" $RES \
        --labels-dir scribblesTr --ignore-label 4 --pairwise-weight ${PAIRWISE:-0.5} \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 224 224 --batch-size 8 \
        --epochs ${ACDC_EPOCHS:-14} --steps-per-epoch 250 --max-seconds ${ACDC_SECONDS:-5400} --val-fraction 0.1 --patience 0 \
        --seed 0 --threads 2 -q
    ;;
acdc-pseudo)
    subset acdc
    # Issue 13 (a), session 9: the scribbles completed into dense pseudo-labels first (random
    # walker per slice, confident pixels only: `attnseg pseudolabel`), then Dice + CE on them
    # (255 = uncertain, no loss). Still no full mask anywhere: validation uses the validation
    # patients' pseudo-labels. fp32 (this session's CPU has no native bf16), 1 thread beside a
    # benchmark.
    [ -f "$WORK/acdc_pseudo/pseudolabels.json" ] || "$ATTNSEG" pseudolabel "$WORK/acdc_train" -o "$WORK/acdc_pseudo" --ignore-label 4 -q
    "$ATTNSEG" train "$WORK/acdc_train" -o "$WORK/acdc-pseudo-2d" --checkpoint-dir "$WORK/acdc-pseudo.ckpt" $RES \
        --labels-dir "$WORK/acdc_pseudo" --ignore-label 255 --dice-weight 1 --pairwise-weight ${PAIRWISE:-0} \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 224 224 --batch-size 8 --precision ${PRECISION:-fp32} \
        --epochs ${ACDC_EPOCHS:-10} --steps-per-epoch 250 --max-seconds ${ACDC_SECONDS:-6600} --val-fraction 0.1 --patience 0 \
        --seed 0 --threads ${THREADS:-2} -q
    ;;
chaos)
    subset chaos_mr_t2
    # 11 training cases (~370 axial slices, 256x256); left/right kidney: no mirroring.
    "$ATTNSEG" train "$WORK/chaos_mr_t2_train" -o "$WORK/chaos-abdomen-mr-2d" --checkpoint-dir "$WORK/chaos.ckpt" $RES \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 256 256 --batch-size 8 --no-mirror \
        --epochs ${CHAOS_EPOCHS:-16} --steps-per-epoch 250 --max-seconds ${CHAOS_SECONDS:-6600} --val-fraction 0.15 --patience 0 \
        --seed 0 --threads 2 -q
    ;;
openkbp)
    subset openkbp_ct
    # 80 training patients x 128 axial slices (128x128 at ~4 mm); dataset.json's per-case
    # "contoured" lists make uncontoured organs unknown (marginal loss); left/right parotid: no mirroring.
    "$ATTNSEG" train "$WORK/openkbp_ct_train" -o "$WORK/openkbp-headneck-ct-2d" --checkpoint-dir "$WORK/openkbp.ckpt" $RES \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 128 128 --batch-size 16 --no-mirror \
        --epochs ${OPENKBP_EPOCHS:-18} --steps-per-epoch 250 --max-seconds ${OPENKBP_SECONDS:-6600} --val-fraction 0.1 --patience 0 \
        --seed 0 --threads 2 -q
    ;;
openkbp-v2)
    subset openkbp_ct
    # v2 (session 8): warm start from the shipped v1 weights (same split, same validation
    # patients), bf16 autocast (AMX CPUs: ~1.9x faster per step), LR 5e-4, 12 000 more steps.
    "$ATTNSEG" train "$WORK/openkbp_ct_train" -o "$WORK/openkbp-headneck-ct-2d-v2" --checkpoint-dir "$WORK/openkbp-v2.ckpt" $RES \
        --init-model openkbp-headneck-ct-2d@1 --precision bf16 --lr 5e-4 \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 128 128 --batch-size 16 --no-mirror \
        --epochs ${OPENKBP_EPOCHS:-48} --steps-per-epoch 250 --max-seconds ${OPENKBP_SECONDS:-5400} --val-fraction 0.1 --patience 0 \
        --seed 0 --threads 2 -q
    ;;
openkbp-v3)
    # v2 stopped on its time budget before its poly schedule annealed: a schedule that fits.
    # Session 11 ran it as the one-slice control of openkbp-25d (the same start, LR, steps and
    # seed, no neighbouring slices): PRECISION=fp32 OPENKBP_SECONDS=9000, as the 2.5D run was.
    subset openkbp_ct
    "$ATTNSEG" train "$WORK/openkbp_ct_train" -o "$WORK/openkbp-headneck-ct-2d-v3" --checkpoint-dir "$WORK/openkbp-v3.ckpt" $RES \
        --init-model openkbp-headneck-ct-2d@2 --precision ${PRECISION:-bf16} --lr 3e-4 \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 128 128 --batch-size 16 --no-mirror \
        --epochs ${OPENKBP_EPOCHS:-18} --steps-per-epoch 250 --max-seconds ${OPENKBP_SECONDS:-6000} --val-fraction 0.1 --patience 0 \
        --seed 0 --threads ${THREADS:-2} -q
    ;;
openkbp-25d)
    # session 10: 2.5D, the slice and 2 neighbours on each side (+-5 mm at 2.5 mm slices) as
    # input channels; from v2's weights (its kernel on the middle channel, the neighbours at 0,
    # so it starts as v2), an annealed schedule that fits the budget; fp32 (no native bf16 on
    # this session's CPU: PRECISION=bf16 where there is).
    subset openkbp_ct
    "$ATTNSEG" train "$WORK/openkbp_ct_train" -o "$WORK/openkbp-headneck-ct-2d-25d" --checkpoint-dir "$WORK/openkbp-25d.ckpt" $RES \
        --init-model openkbp-headneck-ct-2d@2 --context-slices 2 --precision ${PRECISION:-fp32} --lr 3e-4 \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 128 128 --batch-size 16 --no-mirror \
        --epochs ${OPENKBP_EPOCHS:-18} --steps-per-epoch 250 --max-seconds ${OPENKBP_SECONDS:-5700} --val-fraction 0.1 --patience 0 \
        --seed 0 --threads ${THREADS:-2} -q
    ;;
openkbp-coronal)
    # session 13: a coronal 2D model (benchmarks/openkbp_multiview.py writes coronal stacks of the
    # training patients: head-to-foot rows, left-right columns), from v2's axial weights, to be
    # averaged with the axial model; bf16 (native on this session's CPU), annealed in the budget.
    [ -d "$WORK/openkbp_coronal_train" ] || "$PY" benchmarks/openkbp_multiview.py write "$WORK/openkbp_coronal_train"
    "$ATTNSEG" train "$WORK/openkbp_coronal_train" -o "$WORK/openkbp-headneck-ct-2d-coronal" --checkpoint-dir "$WORK/openkbp-coronal.ckpt" $RES \
        --init-model openkbp-headneck-ct-2d@2 --precision ${PRECISION:-bf16} --lr 3e-4 \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 128 128 --batch-size 16 --no-mirror \
        --epochs ${OPENKBP_EPOCHS:-16} --steps-per-epoch 250 --max-seconds ${OPENKBP_SECONDS:-5400} --val-fraction 0.1 --patience 0 \
        --seed 0 --threads ${THREADS:-2} -q
    ;;
openkbp-coronal-v2)
    # the coronal model of 4 000 steps never predicted the esophagus or the larynx (few coronal
    # slices show them): 8 000 more steps from its weights, class-balanced foreground crops
    [ -d "$WORK/openkbp_coronal_train" ] || "$PY" benchmarks/openkbp_multiview.py write "$WORK/openkbp_coronal_train"
    "$ATTNSEG" train "$WORK/openkbp_coronal_train" -o "$WORK/openkbp-headneck-ct-2d-coronal-v2" --checkpoint-dir "$WORK/openkbp-coronal-v2.ckpt" $RES \
        --init-model "$WORK/openkbp-headneck-ct-2d-coronal" --fg-sampling class --precision ${PRECISION:-bf16} --lr 3e-4 \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 128 128 --batch-size 16 --no-mirror \
        --epochs ${OPENKBP_EPOCHS:-32} --steps-per-epoch 250 --max-seconds ${OPENKBP_SECONDS:-3900} --val-fraction 0.1 --patience 0 \
        --seed 0 --threads ${THREADS:-2} -q
    ;;
openkbp-axial-class)
    # session 14: the shipped 2.5D axial weights (v5 = v6's axial model) trained further with
    # class-balanced foreground crops, as the coronal v2 was (its esophagus and larynx came from
    # them); bf16, an annealed schedule that fits the budget
    subset openkbp_ct
    "$ATTNSEG" train "$WORK/openkbp_ct_train" -o "$WORK/openkbp-headneck-ct-2d-axial-class" --checkpoint-dir "$WORK/openkbp-axial-class.ckpt" $RES \
        --init-model openkbp-headneck-ct-2d@5 --context-slices 2 --fg-sampling class --precision ${PRECISION:-bf16} --lr 3e-4 \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 128 128 --batch-size 16 --no-mirror \
        --epochs ${OPENKBP_EPOCHS:-72} --steps-per-epoch 250 --max-seconds ${OPENKBP_SECONDS:-6600} --val-fraction 0.1 --patience 0 \
        --seed 0 --threads ${THREADS:-2} -q
    ;;
hc18)
    # HC18 at 1/2 resolution (800x540 -> 400x270 px; v1 ran at 1/4), the benchmark's training
    # subjects only (its test subjects are left out of the folder); 10 % validate.
    [ -d "$WORK/hc18_x2_train" ] || "$PY" -c "from napari_attnseg.benchmark.datasets import write_hc18_downsampled as w; import sys; w(sys.argv[1], sys.argv[2], 2, 0)" "$DATA/hc18" "$WORK/hc18_x2_train"
    "$ATTNSEG" train "$WORK/hc18_x2_train" -o "$WORK/hc18-ultrasound-2d" --checkpoint-dir "$WORK/hc18.ckpt" $RES \
        --spatial-dims 2 --channels 16 32 64 128 256 --patch-size 256 384 --batch-size 4 \
        --epochs ${HC18_EPOCHS:-24} --steps-per-epoch 100 --max-seconds ${HC18_SECONDS:-3300} --val-fraction 0.1 --patience 0 \
        --seed 0 --threads 2 -q
    # the model sees images at 1/2 resolution (inference resizes and back) and keeps one filled
    # head per image, fitted by an ellipse (the masks are drawn ellipses)
    "$PY" -c "
import json, sys
from napari_attnseg.model.config_check import CONFIG_HASH_KEY, config_hash
p = sys.argv[1]; d = json.load(open(p))
d['inplane_zoom'] = 0.5; d['postprocess'] = ['largest_component', 'fill_holes', 'ellipse']
d.pop(CONFIG_HASH_KEY, None); d[CONFIG_HASH_KEY] = config_hash(d)
json.dump(d, open(p, 'w'), indent=2)" "$WORK/hc18-ultrasound-2d/config.json"
    ;;
*)
    echo "unknown model: $1 (acdc, acdc-v2, acdc-scribbles, acdc-pseudo, chaos, openkbp, openkbp-v2, openkbp-v3, openkbp-25d, openkbp-coronal, openkbp-coronal-v2, openkbp-axial-class, hc18)" >&2; exit 2 ;;
esac
