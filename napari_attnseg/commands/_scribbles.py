"""Sparse labels (scribbles) on the command line: ``refine --scribbles`` (hard constraints) and
``finetune --ignore-label`` (partial cross-entropy + the gated-CRF term).

A scribble file holds a class index where a stroke was drawn and the ignore value elsewhere
(``--ignore-label``; 255 by default for ``refine``; ACDC's published scribbles use 4).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Weight of the gated-CRF term when ``finetune --ignore-label`` is given without
#: ``--pairwise-weight``: best of 0 / 0.5 / 2 / 5 on the toy case of tests/core/test_sparse_losses.py
#: (2 and more collapse to one class); on ACDC it helped a little but a short scribble-only
#: fine-tune did not pay off (BENCHMARKS.md).
DEFAULT_PAIRWISE_WEIGHT = 0.5


def _label_value(text: str) -> int:
    try:
        v = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a whole number 0..65535, got {text!r}") from exc
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"expected a whole number 0..65535, got {v}")
    return v


def _weight(text: str) -> float:
    from ._common import real_number

    return real_number(text, lambda v: v >= 0, "a number >= 0")


def add_refine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scribbles", default=None,
                        help="scribble file on the image's grid: voxels not equal to --ignore-label "
                             "are hard constraints (their class), and spread along the image")
    parser.add_argument("--ignore-label", type=_label_value, default=255,
                        help="the scribble file's 'not annotated' value (default 255)")


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ignore-label", type=_label_value, default=None,
                        help="LABELS are sparse (scribbles): voxels equal to this value are not "
                             "annotated and carry no loss (partial cross-entropy); slices with any "
                             "annotation count as reviewed (e.g. 255; ACDC's scribbles use 4)")
    parser.add_argument("--pairwise-weight", type=_weight, default=None,
                        help="weight of the gated-CRF term that spreads sparse labels along image "
                             f"edges (default {DEFAULT_PAIRWISE_WEIGHT} with --ignore-label, else 0)")


def read_scribbles(path: str | Path, image: Any, n_classes: int, ignore: int) -> np.ndarray:
    """The scribble array (image shape) from ``path``, checked: same grid as ``image`` (a
    Volume), whole numbers, only classes ``0..n_classes-1`` or ``ignore``."""
    from ..errors import GeometryError, ReadError
    from ..io import read_volume

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    vol = read_volume(p)
    if tuple(vol.shape) != tuple(image.shape):
        raise GeometryError(f"{p}: the scribbles have shape {tuple(vol.shape)} but the image "
                            f"{image.source} has {tuple(image.shape)}; they must share a grid")
    if not np.allclose(vol.affine, image.affine, atol=1e-3):
        raise GeometryError(f"{p}: the scribbles are not on the image's grid (their affine "
                            f"differs from {image.source}'s)")
    data = np.asarray(vol.data)
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
            raise ReadError(p, "the scribbles hold non-integer values; they must be whole numbers")
        data = data.astype(np.int64)
    elif data.dtype.kind not in "biu":
        raise ReadError(p, f"the scribbles have voxels of type {data.dtype}, not whole numbers")
    from ..interactive.scribbles import stray_values, stray_values_message

    bad = stray_values(data, n_classes, ignore)
    if bad:
        raise ReadError(p, "the scribbles hold " + stray_values_message(bad, n_classes, ignore) + " (--ignore-label)")
    if not (data != ignore).any():
        raise ReadError(p, f"the scribbles hold no stroke: every voxel is the ignore value {ignore}")
    return data


def scribble_constraints(args: argparse.Namespace, probs: np.ndarray,
                         image: Any) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """``(probabilities with the strokes fused in and clamped, labels -> labels with every
    scribbled voxel set to its class)``; unchanged without ``--scribbles``."""
    if not getattr(args, "scribbles", None):
        return probs, lambda labels: labels
    from ..interactive import ScribbleParams, apply_scribbles, enforce_scribbles

    n_classes = 2 if probs.shape == tuple(image.shape) else int(probs.shape[0])
    scr = read_scribbles(args.scribbles, image, n_classes, args.ignore_label)
    modality = image.modality if getattr(args, "modality", None) is None else args.modality
    fused = apply_scribbles(probs, image.data, scr, image.spacing,
                            ScribbleParams(modality=modality or ""), ignore=args.ignore_label)
    return fused, lambda labels: enforce_scribbles(labels, scr, args.ignore_label)


def sparse_train_options(args: argparse.Namespace) -> dict[str, float]:
    """TrainConfig options for sparse labels: partial cross-entropy (no Dice term unless
    ``--dice-weight`` asks for one, as dense pseudo-labels do) and the gated-CRF term."""
    weight = getattr(args, "pairwise_weight", None)
    dice = getattr(args, "dice_weight", None)
    if dice is not None and not (np.isfinite(dice) and dice >= 0):
        raise ValueError(f"--dice-weight must be a number >= 0, got {dice}")
    if getattr(args, "ignore_label", None) is None:
        opts = {} if weight is None else {"pairwise_weight": weight}
        return opts if dice is None else {**opts, "dice_weight": dice}
    return {"dice_weight": 0.0 if dice is None else dice,
            "pairwise_weight": DEFAULT_PAIRWISE_WEIGHT if weight is None else weight}
