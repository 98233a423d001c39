#!/usr/bin/env bash
# Session 11: the shipped default versions that declare the in-plane pixel sizes their weights
# were trained on (ModelSpec.inplane_spacing). Each is the previous version's folder, weights byte
# for byte, with one config entry added and its held-out result recorded; ship_model.py refuses
# to overwrite a shipped version. The held-out JSONs come from:
#   .venv/bin/python benchmarks/bench_real_models.py DATASET --model FOLDER --threads 2 --json F
# on a copy of the previous version with the entry added (every held-out volume's pixel size lies
# in its range, so the scores are the previous version's).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
M=napari_attnseg/models
"$PY" scripts/ship_model.py "$M/acdc-cardiac-mr-2d/3" acdc-cardiac-mr-2d 4 --anatomy heart \
    --set 'inplane_spacing=[1.37, 1.68]' --test benchmarks/results/acdc_v4_test.json      # ACDC's published resolution
"$PY" scripts/ship_model.py "$M/chaos-abdomen-mr-2d/2" chaos-abdomen-mr-2d 3 --anatomy abdomen \
    --set 'inplane_spacing=[1.25, 1.25]' --test benchmarks/results/chaos_v3_test.json     # every CHAOS volume here
"$PY" scripts/ship_model.py "$M/openkbp-headneck-ct-2d/3" openkbp-headneck-ct-2d 4 --anatomy "head and neck" \
    --set 'inplane_spacing=[3.75, 4.9]' --test benchmarks/results/openkbp_v4_test.json    # training patients' 5th-95th percentiles
# the cards (README.md) are written by hand: the previous card under a version header
