#!/usr/bin/env bash
# Session 12: the shipped default versions that declare the orientation their weights were
# trained in (ModelSpec.orientation, the scan's (z, y, x) axes as patient directions). Every
# CHAOS training file is stored S, A, L (slices toward superior, rows toward anterior, columns
# toward the patient's left), read from its direction. OpenKBP's files carry no orientation
# (qform and sform codes 0), so theirs was read off the anatomy of every training patient: I, L, P
# (the brainstem at lower slice indices than the cord, the left parotid at higher rows than the
# right, the mandible at lower columns than the cord); a file without an orientation is still cut
# as stored. Each is the previous version's folder, weights byte for byte, with one config entry
# added and its held-out result recorded; ship_model.py refuses to overwrite a shipped version.
# The held-out JSONs come from
#   .venv/bin/python benchmarks/bench_real_models.py DATASET --model FOLDER --threads 2 --json F
# on a copy of the previous version with the entry added (the held-out files are stored like the
# training files, so every volume's score is the previous version's, to the last digit).
# ACDC (trained with flips and 90-degree rotations, no side labels) and HC18 (2D images without
# geometry) keep their versions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
M=napari_attnseg/models
"$PY" scripts/ship_model.py "$M/chaos-abdomen-mr-2d/3" chaos-abdomen-mr-2d 4 --anatomy abdomen \
    --set 'orientation="SAL"' --test benchmarks/results/chaos_v4_test.json
"$PY" scripts/ship_model.py "$M/openkbp-headneck-ct-2d/4" openkbp-headneck-ct-2d 5 --anatomy "head and neck" \
    --set 'orientation="ILP"' --test benchmarks/results/openkbp_v5_test.json
# the cards (README.md) are written by hand: the previous card under a version header
