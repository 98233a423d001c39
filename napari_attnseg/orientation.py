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


def is_orientation_code(code: object) -> bool:
    """True for a 2D model's orientation: three letters for its slice, row and column axes, each
    naming the direction that axis runs toward, one from each world axis ("SAL": slices toward
    superior, rows toward anterior, columns toward the patient's left; "ILP": OpenKBP's arrays,
    whose rows run across the patient)."""
    if not isinstance(code, str) or len(code) != 3:
        return False
    worlds = [w for ch in code for w, pair in enumerate(WORLD_LETTERS) if ch in pair]
    return len(worlds) == 3 and sorted(worlds) == [0, 1, 2] and worlds[0] == 0  # axial slices


def orientation_code(direction: np.ndarray) -> str:
    """The letters (toward) of the axes of ``np.transpose(data, axis_permutation(direction))``:
    three for a volume, the last two (A/P, R/L) for a 2D slice with a 2 x 2 direction."""
    d = np.asarray(direction, dtype=float)
    n = d.shape[0]
    perm = axis_permutation(d)
    off = 3 - n
    return "".join(WORLD_LETTERS[i + off][0 if d[i, perm[i]] > 0 else 1] for i in range(n))


def reorientation_to(direction: np.ndarray, code: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(perm, flips)``: transposing an array with ``direction`` by ``perm``, then reversing the
    axes in ``flips``, makes its axes run as ``code`` says (its last ``n`` letters for an
    n-dimensional direction; a 2D slice's world axes are A/P and R/L). World order and no flips
    when the code's letters do not fit the direction (a slice of a model that cuts coronally)."""
    d = np.asarray(direction, dtype=float)
    n = d.shape[0]
    base = axis_permutation(d)
    off = 3 - n
    world, sign = [], []
    for ch in str(code)[-n:]:
        for w, (pos, neg) in enumerate(WORLD_LETTERS):
            if ch in (pos, neg):
                world.append(w - off)
                sign.append(1.0 if ch == pos else -1.0)
    if len(world) != n or sorted(world) != list(range(n)):
        return base, ()
    perm = tuple(base[w] for w in world)
    flips = tuple(i for i in range(n) if np.sign(d[world[i], perm[i]]) != sign[i])
    return perm, flips
