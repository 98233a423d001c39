#!/usr/bin/env bash
# Session 13: openkbp-headneck-ct-2d version 6 = version 5 (the 2.5D axial weights byte for byte)
# plus a coronal view (ModelSpec.views): a one-slice 2D network trained on coronal stacks of the
# same training patients (scripts/train_real_models.sh openkbp-coronal, then openkbp-coronal-v2),
# its class probabilities averaged with the axial model's over the whole volume.
#   WEIGHT: the coronal share, chosen on the models' 8 validation patients
#     (benchmarks/openkbp_multiview.py eval --subjects validation --weights ...), never the test ones
#   rows: the view's rows run along OpenKBP's slices (training patients' 5th-95th percentiles
#     2.0-3.0 mm), its columns across the patient (3.75-4.9 mm, as the axial model's pixels)
# Then the held-out patients through the product path (attnseg's predict with the view):
#   .venv/bin/python benchmarks/bench_real_models.py openkbp_ct --model /tmp/attnseg_real/openkbp-v6-staged \
#       --threads 2 --json benchmarks/results/openkbp_v6_test.json
#
# Session 14: version 7 = the axial 2.5D network trained further with class-balanced crops
# (scripts/train_real_models.sh openkbp-axial-class) plus the same coronal view:
#   AXIAL=/tmp/attnseg_real/openkbp-headneck-ct-2d-axial-class VERSION=7 WEIGHT=0.5 bash scripts/ship_views.sh
# (the trained folder gets version 5's label names, pixel range and anatomy first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-/tmp/attnseg_real}
WEIGHT=${WEIGHT:?set WEIGHT, the coronal share chosen on the validation patients}
M=napari_attnseg/models
VERSION=${VERSION:-6}
AXIAL=${AXIAL:-$M/openkbp-headneck-ct-2d/5}
STAGED="$WORK/openkbp-v$VERSION-staged"
# the view as shipped: the trained folder with its pixel ranges declared, named "coronal";
# the axial network: a packaged version as it is, or a trained folder given v5's label names,
# pixel range (training patients' 5th-95th percentiles) and anatomy
rm -rf "$WORK/coronal" "$WORK/axial"
cp -r "$WORK/openkbp-headneck-ct-2d-coronal-v2" "$WORK/coronal"
cp -r "$AXIAL" "$WORK/axial"
rm -f "$WORK/axial/README.md"
"$PY" - "$WORK/coronal" "$WORK/axial" <<'EOF'
import json, sys
from pathlib import Path
from napari_attnseg.model.config_check import CONFIG_HASH_KEY, config_hash
from napari_attnseg.model.checkpoint import load_model
v5 = json.loads(Path("napari_attnseg/models/openkbp-headneck-ct-2d/5/config.json").read_text())

def declare(folder, check=(), **updates):
    p = Path(folder) / "config.json"
    c = json.loads(p.read_text())
    assert all(c[k] == v5[k] for k in check), (folder, check)
    c.update(updates)
    c.pop(CONFIG_HASH_KEY, None)
    c[CONFIG_HASH_KEY] = config_hash(c)
    p.write_text(json.dumps(c, indent=2))
    load_model(p.parent)

# the model's label names (the dataset's are CamelCase)
declare(sys.argv[1], name="openkbp-headneck-ct-2d-coronal", inplane_spacing=[2.0, 3.0, 3.75, 4.9],
        label_names=v5["label_names"])
declare(sys.argv[2], check=("orientation", "context_slices"), label_names=v5["label_names"],
        inplane_spacing=v5["inplane_spacing"], anatomy=v5["anatomy"])
EOF
if [ "${STAGE_ONLY:-0}" = "1" ]; then
    # a staged copy of the axial network with the view, to score before shipping
    rm -rf "$STAGED"
    cp -r "$WORK/axial" "$STAGED"
    "$PY" -c "import sys; from napari_attnseg.model.views import attach_views as a; a(sys.argv[1], [(sys.argv[2], (2, 0, 1), float(sys.argv[3]))])" \
        "$STAGED" "$WORK/coronal" "$WEIGHT"
    exit 0
fi
"$PY" scripts/ship_model.py "$WORK/axial" openkbp-headneck-ct-2d "$VERSION" --anatomy "head and neck" \
    --view "$WORK/coronal" 2,0,1 "$WEIGHT" --test "benchmarks/results/openkbp_v${VERSION}_test.json"
# the card (README.md) is written by hand: the previous card under a version header
