"""Copy a trained model folder into the package (``napari_attnseg/models/NAME/VERSION``).

    .venv/bin/python scripts/ship_model.py /tmp/attnseg_real/openkbp-headneck-ct-2d \
        openkbp-headneck-ct-2d 1 --anatomy "head and neck" [--set inplane_zoom=0.5] [--test JSON] \
        [--view FOLDER AXES WEIGHT]   # e.g. --view /tmp/coronal 2,0,1 0.5 (napari_attnseg.model.views)

Sets the name, version, anatomy (and any ``--set key=JSON`` entry), records the held-out test
scores from a ``bench_real_models.py --json`` file under ``provenance.test``, recomputes the
config hash (an intended edit) and checks that the shipped folder loads. The weights are copied
byte for byte (their sha256 is checked again at load). Refuses to overwrite a shipped version.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from napari_attnseg.model.checkpoint import load_model  # noqa: E402
from napari_attnseg.model.config_check import CONFIG_HASH_KEY, config_hash  # noqa: E402

COPIED = ("config.json", "weights.pt", "history.csv", "curves.png")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("name")
    ap.add_argument("version")
    ap.add_argument("--anatomy", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    ap.add_argument("--test", type=Path, help="bench_real_models.py --json output to record")
    ap.add_argument("--view", nargs=3, action="append", default=[], metavar=("FOLDER", "AXES", "WEIGHT"),
                    help="a trained model folder to average with this one, cutting the volume along AXES "
                         "(a permutation of the model's slice frame, e.g. 2,0,1: coronal) with WEIGHT")
    args = ap.parse_args(argv)
    dst = ROOT / "napari_attnseg" / "models" / args.name / args.version
    if dst.exists():
        print(f"{dst} exists: ship a new version instead", file=sys.stderr)
        return 2
    config = json.loads((args.src / "config.json").read_text(encoding="utf-8"))
    config.update(name=args.name, version=args.version, anatomy=args.anatomy)
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = json.loads(value)
    if args.test is not None:
        test = json.loads(args.test.read_text(encoding="utf-8"))
        config.setdefault("provenance", {})["test"] = test.get("summary", test)
    config.pop(CONFIG_HASH_KEY, None)
    config[CONFIG_HASH_KEY] = config_hash(config)
    tmp = dst.with_name(f".{args.version}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in COPIED:
        if (args.src / name).is_file() and name != "config.json":
            shutil.copy2(args.src / name, tmp / name)
    (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    if args.view:
        from napari_attnseg.model.views import attach_views

        attach_views(tmp, [(Path(f), tuple(int(a) for a in axes.split(",")), float(w)) for f, axes, w in args.view])
    model = load_model(tmp)
    tmp.rename(dst)
    print(f"shipped {model.spec.name}@{model.spec.version} ({model.spec.modality}, "
          f"{model.spec.anatomy}) to {dst.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
