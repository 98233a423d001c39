#!/usr/bin/env bash
# The exact commands that produced the shipped models in napari_attnseg/models/ (version 1).
#
#   bash scripts/train_shipped_models.sh            # both models
#   HC18=/path/to/hc18 WORK=/tmp/x bash scripts/train_shipped_models.sh
#
# Both models are trained by our own `attnseg train` (nothing is downloaded). Training data are
# written to $WORK (outside the repository: the HC18 images are never copied into the repo).
# Run on the project's 2-core CPU machine (heavily shared at the time: wall-clock budgets, so a
# faster machine gets more steps and slightly different weights). After training, the model
# folders are copied into the package as <name>/1/ and the model cards (README.md) were then
# completed by hand with the measured evaluation (sample case, held-out phantoms, HC18 test).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/shipped}
HC18=${HC18:-../shared/data/hc18}
mkdir -p "$WORK"

# (a) default model: 2D attention U-Net on CT phantoms (16 cases of phantom_dataset("ct", 16, seed=1);
#     not the bundled sample_data/ct_phantom.nii.gz, which is ct_phantom(seed=0, vary=0.3))
python -c "from napari_attnseg.benchmark.datasets import write_phantom_decathlon as w; w('$WORK/phantom_ct', 'ct', 16, seed=1)"
#     stage 1: 40 epochs (615 s); stage 2: resumed from stage 1's checkpoint with --epochs 70 (the lesion class
#     was only learned in stage 2; the LR schedule restarts at (1 - 800/1400)^0.9 of the base LR on resume)
attnseg train "$WORK/phantom_ct" -o "$WORK/stage1/ct-phantom-2d" --checkpoint-dir "$WORK/ct.ckpt" --spatial-dims 2 \
    --channels 8 16 32 64 128 --patch-size 96 96 --batch-size 4 --epochs 40 --steps-per-epoch 20 \
    --max-seconds 660 --val-fraction 0.15 --patience 0 --seed 0 --threads 1 -q
attnseg train "$WORK/phantom_ct" -o "$WORK/ct-phantom-2d" --checkpoint-dir "$WORK/ct.ckpt" --resume --spatial-dims 2 \
    --channels 8 16 32 64 128 --patch-size 96 96 --batch-size 4 --epochs 70 --steps-per-epoch 20 \
    --max-seconds 1200 --val-fraction 0.15 --patience 0 --seed 0 --threads 1 -q

# (b) ultrasound model: HC18 downsampled x4 (800x540 -> 200x135 px, pixel sizes x4), training subjects
#     of the benchmark split only (split seed 0, 20 % of subjects held out for the benchmark test set)
python -c "from napari_attnseg.benchmark.datasets import write_hc18_downsampled as w; w('$HC18', '$WORK/hc18_x4_train', 4, 0)"
attnseg train "$WORK/hc18_x4_train" -o "$WORK/hc18-ultrasound-2d" --checkpoint-dir "$WORK/hc18.ckpt" --spatial-dims 2 \
    --channels 8 16 32 64 128 --patch-size 128 192 --batch-size 4 --epochs 40 --steps-per-epoch 20 \
    --max-seconds 840 --val-fraction 0.1 --patience 0 --seed 0 --threads 1 -q

# install into the package (config.json, weights.pt, README.md, history.csv, curves.png)
# the HC18 model sees images at 1/4 resolution: record it so inference resizes (and back)
python -c "import json,sys; p=sys.argv[1]; d=json.load(open(p)); d[\"inplane_zoom\"]=0.25; json.dump(d, open(p, \"w\"), indent=2)" "$WORK/hc18-ultrasound-2d/config.json"
for name in ct-phantom-2d hc18-ultrasound-2d; do
    mkdir -p "napari_attnseg/models/$name/1"
    cp "$WORK/$name"/{config.json,weights.pt,README.md,history.csv,curves.png} "napari_attnseg/models/$name/1/"
done
