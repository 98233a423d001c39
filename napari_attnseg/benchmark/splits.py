"""Fixed, documented patient-level splits of the real multi-case datasets in ``../shared/data``
(ACDC, CHAOS, OpenKBP) and a writer of a Decathlon-layout training subset (symbolic links, so the
data are never copied).

The test patients are chosen once, by rule, and never used for training or model selection:

* ACDC: the 80 patients sorted; every fifth starting at the third (positions 2, 7, 12, ...): 16
  test patients, spread over the five pathology groups (the patients are numbered by group).
* CHAOS: cases sorted; positions 1, 5, 9, ... (every fourth): 4 of 15.
* OpenKBP: patients sorted; every fifth starting at the third: 20 of 100.

:func:`shared_split` gives the same split as a :class:`~napari_attnseg.benchmark.split.Split`, so
that ``attnseg benchmark`` scores exactly the shipped models' held-out patients.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..training.dataset import subject_of

_RULES = {"acdc": (5, 2), "chaos_mr_t2": (4, 1), "openkbp_ct": (5, 2)}
#: Datasets whose files carry no voxel size (nominal 1 mm pixdim): distances are in pixels.
NOMINAL_SPACING = frozenset({"acdc"})


def has_rule(folder: str | Path) -> bool:
    """Whether ``folder`` is one of the shared datasets with a fixed split rule (by its name)."""
    return Path(folder).name in _RULES


def _entries(folder: Path) -> tuple[dict, list[dict]]:
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    return meta, [e for e in meta.get("training", []) if isinstance(e, dict)]


def case_of(entry: dict) -> str:
    return Path(str(entry["label"])).name.split(".nii")[0]


def split_subjects(folder: str | Path) -> tuple[list[str], list[str]]:
    """``(train_subjects, test_subjects)`` of a shared dataset by its fixed rule."""
    folder = Path(folder)
    period, offset = _RULES[folder.name]
    _, entries = _entries(folder)
    subjects = sorted({subject_of(case_of(e)) for e in entries})
    test = [s for i, s in enumerate(subjects) if i % period == offset]
    train = [s for s in subjects if s not in test]
    return train, test


def held_out_entries(folder: str | Path) -> list[dict]:
    """The dataset.json entries of ``folder``'s test patients (:func:`split_subjects`), in file
    order: what the benchmarks score."""
    folder = Path(folder)
    _, test = split_subjects(folder)
    _, entries = _entries(folder)
    return [e for e in entries if subject_of(case_of(e)) in set(test)]


def write_subset(src: str | Path, dst: str | Path, subjects: list[str]) -> Path:
    """A Decathlon folder at ``dst`` holding only ``subjects``' cases of ``src`` (links)."""
    src, dst = Path(src).resolve(), Path(dst)
    meta, entries = _entries(src)
    keep = [e for e in entries if subject_of(case_of(e)) in set(subjects)]
    for sub in ("imagesTr", "labelsTr"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    keys = ("image", "label", "scribble")  # "scribble": ACDC's scribblesTr, where the entries name it
    for e in keep:
        for key in (k for k in keys if e.get(k)):
            (dst / Path(str(e[key])).parent.name).mkdir(parents=True, exist_ok=True)
            target = (src / str(e[key])).resolve()
            link = dst / Path(str(e[key])).parent.name / target.name
            if not link.exists():
                os.symlink(target, link)
    out = {**meta, "training": keep,
           "numTraining": len(keep)}
    (dst / "dataset.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    return dst


def shared_split(folder: str | Path):
    """The fixed split of a shared dataset as a :class:`~napari_attnseg.benchmark.split.Split`
    (``split_seed`` -1: no seed is involved)."""
    from .split import Split

    folder = Path(folder)
    period, offset = _RULES[folder.name]
    train, test = split_subjects(folder)
    rule = (f"napari_attnseg.benchmark.splits ({folder.name}): subjects sorted, every {period}th from "
            f"position {offset} (0-based) is a test subject; the shipped models' held-out patients")
    return Split(tuple(train), tuple(test), -1, len(test) / max(1, len(train) + len(test)), rule)
