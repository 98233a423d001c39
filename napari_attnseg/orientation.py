"""Which array axis runs along which world axis: the one rule shared by the viewer adapter and
the predictor (pure numpy; no napari, no torch).

A volume's ``direction`` holds the world (S, A, R) direction of each array axis in its columns.
:func:`axis_permutation` picks, for every world axis, the array axis that runs most nearly along
it (exact for axis-aligned volumes, the nearest axis for oblique ones). Array axis ``perm[i]``
then pairs with world axis ``i``: ``perm[0]`` is the through-plane axis of axial slices.

* The viewer shows ``np.transpose(data, perm)`` (a view, no copy), so napari never gets an axis
  permutation in a layer transform (its 2D slicing cannot take one; it aborted in ``paintGL``).
* 2D models run on the slices along ``perm[0]`` (axial) whatever the storage order (a scan
  stored PSR used to be segmented in sagittal slices).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations

import numpy as np

#: Letters of the positive and the negative direction of each world axis (S, A, R order).
WORLD_LETTERS = (("S", "I"), ("A", "P"), ("R", "L"))


def axis_permutation(direction: np.ndarray) -> tuple[int, ...]:
    """``perm`` with array axis ``perm[i]`` the one closest to world axis ``i``.

    The assignment maximizes ``sum |direction[i, perm[i]]|`` (for an axis-aligned or mildly
    oblique direction: each column's largest component); ties keep the identity, so the
    permutation of an already permuted volume is the identity.
    """
    d = np.abs(np.asarray(direction, dtype=float))
    n = d.shape[0]
    if d.shape != (n, n):
        raise ValueError(f"direction must be square, got shape {d.shape}")
    best = tuple(range(n))
    best_score = float(sum(d[i, i] for i in range(n)))
    for perm in permutations(range(n)):
        score = float(sum(d[i, perm[i]] for i in range(n)))
        if score > best_score + 1e-12:
            best, best_score = tuple(perm), score
    return best


def inverse_permutation(perm: Sequence[int]) -> tuple[int, ...]:
    """``inv`` with ``np.transpose(np.transpose(a, perm), inv) == a``."""
    return tuple(int(i) for i in np.argsort(np.asarray(perm)))


def compose(outer: Sequence[int], inner: Sequence[int]) -> tuple[int, ...]:
    """Axes of ``np.transpose(np.transpose(a, outer), inner)`` as one permutation of ``a``."""
    return tuple(int(outer[i]) for i in inner)


def slice_axis(direction: np.ndarray) -> int:
    """The array axis 2D models slice along: the one closest to world S (axial slices)."""
    return axis_permutation(direction)[0]


def axis_letters(direction: np.ndarray) -> list[tuple[str, str]]:
    """For each array axis, the letters (toward, from) of the world direction it runs along."""
    d = np.asarray(direction, dtype=float)
    out = []
    for j in range(d.shape[1]):
        i = int(np.argmax(np.abs(d[:, j])))
        pos, neg = WORLD_LETTERS[i - d.shape[0] + 3] if d.shape[0] <= 3 else ("?", "?")
        out.append((pos, neg) if d[i, j] > 0 else (neg, pos))
    return out
