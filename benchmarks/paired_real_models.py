"""Paired difference of two ``bench_real_models.py --json`` results on the same volumes.

    .venv/bin/python benchmarks/paired_real_models.py A.json B.json

Prints A − B per volume-mean Dice (mean [95 % bootstrap CI over volumes], how many volumes A is
better / worse on) and per class (the volumes where both scored it), so a claim that one model
beats another rests on the same patients, not on two overlapping intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from napari_attnseg.benchmark.stats import bootstrap_ci  # noqa: E402


def _volumes(path: str) -> dict[str, dict]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {v["case"]: v for v in data["volumes"]}


def paired(a_path: str, b_path: str) -> dict:
    a, b = _volumes(a_path), _volumes(b_path)
    if set(a) != set(b):
        raise SystemExit(f"the two results cover different volumes: only in A {sorted(set(a) - set(b))[:5]}, "
                         f"only in B {sorted(set(b) - set(a))[:5]}")
    cases = sorted(a)
    diff = np.array([a[c]["mean_dice"] - b[c]["mean_dice"] for c in cases])
    out = {"n": len(cases), "mean_dice": bootstrap_ci(diff), "better": int((diff > 0).sum()),
           "worse": int((diff < 0).sum()), "worst": float(diff.min()), "classes": {}}
    classes = sorted({k for c in cases for k in a[c]["classes"]}, key=int)
    for k in classes:
        both = [c for c in cases if k in a[c]["classes"] and k in b[c]["classes"]]
        d = np.array([a[c]["classes"][k]["dice"] - b[c]["classes"][k]["dice"] for c in both])
        if d.size:
            out["classes"][k] = {"n": len(both), "dice": bootstrap_ci(d)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    r = paired(args.a, args.b)
    m, lo, hi = r["mean_dice"]
    print(f"A - B over {r['n']} volumes: mean Dice {m:+.3f} [{lo:+.3f}, {hi:+.3f}]; A better on {r['better']}, "
          f"worse on {r['worse']} (worst {r['worst']:+.3f})")
    for k, v in r["classes"].items():
        m, lo, hi = v["dice"]
        print(f"  class {k} ({v['n']} volumes): {m:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
