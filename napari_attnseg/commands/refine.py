"""``attnseg refine PROBS IMAGE -o OUT``: refine class probabilities with a dense CRF and write the
labels on the image's grid.

PROBS is a NIfTI file holding either a 4D array with the class axis last (nibabel order
``i, j, k, C``, as the ``predict`` command and most toolkits write it) or a 3D foreground
probability. IMAGE is the scan the probabilities were computed from (any readable format).
Parameters not given on the command line come from the image's modality preset.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import GeometryError, ReadError
from ._common import add_input_options, run_with_progress
from ._scribbles import add_refine_arguments, scribble_constraints
from ._spacing import add_spacing_argument, apply_spacing

logger = logging.getLogger(__name__)

#: CLI flag -> CRFParams field.
FLAGS = {
    "sxy_gaussian_mm": float, "gaussian_weight": float, "sxy_bilateral_mm": float,
    "srgb_bilateral": float, "bilateral_weight": float, "iterations": int, "band_mm": float,
    "uncertain": float, "workers": int, "max_shrink": float,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("probs", help="probabilities: 4D NIfTI (class last) or 3D foreground")
    parser.add_argument("image", help="the scan the probabilities belong to")
    parser.add_argument("-o", "--output", required=True, help="output labels (.nii / .nii.gz)")
    parser.add_argument("--modality", choices=["CT", "MR", "US", ""], default=None,
                        help="parameter preset (default: the image's modality)")
    for name, typ in FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=typ, default=None,
                            help=f"CRF {name} (default: from the modality preset)")
    add_input_options(parser, what="the image")
    parser.add_argument("--mode", choices=["auto", "2d", "3d"], default=None,
                        help="2d per slice, 3d whole volume, auto (default)")
    add_spacing_argument(parser)  # the image's pixel size (CRF bandwidths are in mm)
    parser.add_argument("--no-protect", action="store_true",
                        help="let the CRF erase a class (default: a class shrunk by more than "
                             "--max-shrink keeps its input labels)")
    add_refine_arguments(parser)  # --scribbles / --ignore-label: hard constraints
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def read_probabilities(path: str | Path, image) -> np.ndarray:
    """(C, z, y, x) or (z, y, x) float32 in [0, 1] from a 4D (class-last) or 3D NIfTI file, on
    the grid of ``image`` (a Volume: same shape and affine; a bare shape checks the shape only).
    ReadError / GeometryError naming the file otherwise (an image given as probabilities, a map
    40 mm off the image)."""
    from ..io import read_volume
    from ..io.nifti import read_nifti_channels
    from ..io.validate import require_probabilities, require_same_grid

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    try:
        data, geometry = read_nifti_channels(p)
    except ReadError as exc:
        if "4D file" not in str(exc):
            raise
        geometry = read_volume(p)
        data = np.asarray(geometry.data, dtype=np.float32)
    if isinstance(image, tuple):
        if tuple(geometry.shape) != tuple(image):
            raise GeometryError(f"{p}: probabilities have spatial shape {geometry.shape} but the "
                                f"image has {tuple(image)} (z, y, x); they must share a grid")
    else:
        require_same_grid(geometry, image, f"the probabilities {p}", f"the image {image.source}")
    return require_probabilities(data, p)


def run(args: argparse.Namespace) -> int:
    from ..crf import default_params, refine_job
    from ..io import read_volume, write_volume
    from ._common import check_outputs, input_kwargs, log_read_warnings

    check_outputs([("-o", args.output)], [args.probs, args.image])  # before any work
    image = apply_spacing(read_volume(args.image, **input_kwargs(args)),
                          getattr(args, "spacing", None), args.image)
    log_read_warnings(image, args.image)
    probs = read_probabilities(args.probs, image)
    modality = image.modality if args.modality is None else args.modality
    params = default_params(modality)
    changes = {k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None}
    if args.mode is not None:
        changes["mode"] = args.mode
    if args.no_protect:
        changes["protect"] = False
    params = replace(params, **changes)
    probs, constrain = scribble_constraints(args, probs, image)
    res = run_with_progress(refine_job(probs, image.data, image.spacing, params),
                            desc="refine", quiet=args.quiet)
    for warning in getattr(res, "warnings", ()):
        logger.warning("%s", warning)
    out = image.with_data(constrain(res.labels), is_labels=True)
    prov = {"crf": {"params": res.params.to_dict(), "n_changed": res.n_changed,
                    "probabilities": str(args.probs), "image": str(args.image)}}
    if args.scribbles:
        prov["crf"]["scribbles"] = {"file": str(args.scribbles), "ignore_label": args.ignore_label}
    path = write_volume(out, args.output, reference=image, provenance=prov)
    logger.info("wrote %s (%d voxels changed, %s mode, %.2f s)", path, res.n_changed,
                res.params.mode, res.seconds)
    return 0
