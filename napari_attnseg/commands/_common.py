"""Helpers shared by the CLI subcommands: a terminal progress bar that drains a core job, the
input options (``--series-uid``, ``--split-4d``), argument types that refuse bad numbers before
any work, and the output checks (:func:`napari_attnseg.io.outputs.check_outputs`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
import logging
import math
import sys
from typing import Any

from .._progress import Job, Progress, drain


def run_with_progress(job: Job[Any], desc: str = "", quiet: bool = False) -> Any:
    """Drain ``job`` showing a tqdm progress bar on stderr (nothing when ``quiet``)."""
    if quiet:
        return drain(job)
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, file=sys.stderr, leave=True, dynamic_ncols=True)
    stage = [None]

    def show(p: Progress) -> None:
        if p.stage != stage[0]:
            stage[0] = p.stage
            bar.reset(total=max(p.total, 0))
            bar.set_description(f"{desc} {p.stage}".strip())
        if p.total and bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        if p.message:
            bar.set_postfix_str(p.message, refresh=False)
        bar.refresh()

    try:
        return drain(job, show)
    finally:
        bar.close()


logger = logging.getLogger(__name__)

#: largest training / inference patch accepted on the command line (voxels)
MAX_PATCH_VOXELS = 1 << 24


def _whole_number(text: str, lo: int, bound: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < lo:
        raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--threads -2`` is refused before any work)."""
    return _whole_number(text, 1, "at least 1")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a volume index)."""
    return _whole_number(text, 0, "0 or more")


def real_number(text: str, ok: Callable[[float], bool], expected: str) -> float:
    """argparse type helper: a finite number for which ``ok`` holds, else "expected ...". """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def add_input_options(parser: argparse.ArgumentParser, prefix: str = "",
                      what: str = "the input") -> None:
    """``--[prefix]series-uid`` and ``--[prefix]split-4d``: what the readers' messages advise
    for DICOM folders holding several series and 4D files."""
    parser.add_argument(f"--{prefix}series-uid", default=None, metavar="UID",
                        help=f"DICOM series of {what} to read when its folder holds several "
                             "(default: the one with most slices, with a warning)")
    parser.add_argument(f"--{prefix}split-4d", type=non_negative_int, default=None,
                        metavar="I", help=f"volume I of {what} when it is a 4D file")


def input_kwargs(args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """The reader keywords the input options give (only those set)."""
    key = prefix.replace("-", "_")
    out = {"series_uid": getattr(args, f"{key}series_uid", None),
           "split_4d": getattr(args, f"{key}split_4d", None)}
    return {k: v for k, v in out.items() if v is not None}


def log_read_warnings(volume: Any, path: Any) -> Any:
    """Show the reader's warnings (uneven spacing, interpolated positions, ...) on the terminal."""
    for msg in getattr(volume, "warnings", ()):
        logger.warning("%s: %s", path, msg)
    return volume


def check_patch_size(patch: Any, dims: int | None = None) -> tuple[int, ...] | None:
    """A patch size from the command line: whole numbers >= 8, one per spatial axis, at most
    :data:`MAX_PATCH_VOXELS` voxels in all (ValueError otherwise, before any work)."""
    if not patch:
        return None
    values = tuple(int(v) for v in patch)
    if dims is not None and len(values) != dims:
        raise ValueError(f"--patch-size needs {dims} values for a {dims}D model, got "
                         f"{len(values)}")
    if any(v < 8 for v in values):
        raise ValueError(f"--patch-size values must be at least 8, got {list(values)}")
    if math.prod(values) > MAX_PATCH_VOXELS:
        raise ValueError(f"--patch-size {'x'.join(map(str, values))} is "
                         f"{math.prod(values):,} voxels per patch, more than the "
                         f"{MAX_PATCH_VOXELS:,} a patch may have; use a smaller patch")
    return values


def check_outputs(outputs, inputs, sidecars=("-o",)) -> list:
    """:func:`napari_attnseg.io.outputs.check_outputs` (before any work is done). ``sidecars``:
    the NIfTI outputs (a ``.seg.nrrd`` / ``.dcm`` name there has its own writer and no
    sidecar)."""
    from ..io.formats_out import special_writer
    from ..io.outputs import check_outputs as _check

    paths = dict(outputs)
    sidecars = tuple(o for o in sidecars if not paths.get(o) or special_writer(paths[o]) is None)
    return _check(outputs, inputs, sidecars=sidecars)
