"""The fixed, documented train/test split of a benchmark.

Rule (the same for every dataset): the sorted list of distinct subjects (``TrainingPair.group``;
HC18: the first three digits of the file name, so ``010_HC``, ``010_2HC`` ... stay together;
Decathlon: the case name; phantoms: ``case_NNN``) is permuted with
``numpy.random.default_rng(split_seed)``; the first ``round(test_fraction * n)`` subjects
(at least one) are the test subjects, the rest train. ``max_test_cases`` then keeps the first
test images in file order (a subset for a CPU-sized run). The split is written into the
benchmark output (``split.json``) with every subject listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Split", "fixed_split", "subjects_of"]


@dataclass(frozen=True)
class Split:
    train_subjects: tuple[str, ...]
    test_subjects: tuple[str, ...]
    split_seed: int
    test_fraction: float
    rule: str

    def to_dict(self) -> dict:
        return {"rule": self.rule, "split_seed": self.split_seed, "test_fraction": self.test_fraction,
                "train_subjects": list(self.train_subjects), "test_subjects": list(self.test_subjects)}


RULE = ("sorted distinct subjects permuted with numpy.random.default_rng(split_seed); the first "
        "round(test_fraction * n_subjects) (>= 1) are test subjects; all images of a subject stay on one side")


def subjects_of(pairs: Sequence) -> list[str]:
    return sorted({p.group or f"#{i}" for i, p in enumerate(pairs)})


def fixed_split(pairs: Sequence, split_seed: int = 0, test_fraction: float = 0.2) -> Split:
    """The subject-level split of ``pairs`` (see the module docstring)."""
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    subjects = subjects_of(pairs)
    if len(subjects) < 3:
        raise ValueError(f"a benchmark needs at least 3 subjects (train, validation, test), got {len(subjects)}")
    n_test = min(len(subjects) - 2, max(1, int(round(float(test_fraction) * len(subjects)))))
    order = np.random.default_rng(int(split_seed)).permutation(len(subjects))
    test = sorted(subjects[k] for k in order[:n_test])
    train = sorted(set(subjects) - set(test))
    return Split(tuple(train), tuple(test), int(split_seed), float(test_fraction), RULE)


def apply_split(pairs: Sequence, split: Split) -> tuple[list, list]:
    """(train pairs, test pairs) in input order."""
    test = set(split.test_subjects)
    tr = [p for i, p in enumerate(pairs) if (p.group or f"#{i}") not in test]
    te = [p for i, p in enumerate(pairs) if (p.group or f"#{i}") in test]
    return tr, te
