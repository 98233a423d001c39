"""``attnseg baseline METHOD IMAGE -o OUT``: a traditional segmentation (Otsu, region growing,
Chan-Vese or geodesic active contours) written as labels on the image's grid."""

from __future__ import annotations

import argparse
import logging

from ..errors import GeometryError
from ._common import run_with_progress

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", help="otsu, region_growing, chan_vese or geodesic")
    parser.add_argument("image", help="the scan (NIfTI, DICOM folder, NRRD)")
    parser.add_argument("-o", "--output", required=True, help="output labels file (.nii.gz)")
    parser.add_argument("--seed", type=float, nargs="+", metavar="I",
                        help="region growing: seed voxel index (z y x, or y x)")
    parser.add_argument("--seed-mask", help="region growing: seed labels file (nonzero = seed)")
    parser.add_argument("--tolerance", type=float,
                        help="region growing: intensity tolerance (default 10%% of the range)")
    parser.add_argument("--iterations", type=int, default=100, help="active contours (100)")
    parser.add_argument("--init", help="active contours: initial mask file (nonzero = inside)")
    parser.add_argument("--smoothing", type=int, default=1, help="active contours (1)")
    parser.add_argument("--balloon", type=float,
                        help="geodesic: balloon force (default -1, or +1 with --init)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _read_on_grid(path: str, image, what: str):
    from ..io import read_volume

    vol = read_volume(path)
    if not image.same_grid(vol):
        raise GeometryError(f"{what} {path} is not on the grid of the image "
                            f"({vol.shape} vs {image.shape}, or different spacing/affine)")
    return vol.data


def run(args: argparse.Namespace) -> int:
    from ..baselines import ACTIVE_CONTOUR_METHODS, baseline_job, canonical_method
    from ..io import read_volume, write_volume

    method = canonical_method(args.method)
    image = read_volume(args.image)
    kwargs: dict = {}
    if method == "region_growing":
        if args.seed_mask:
            kwargs["seed"] = _read_on_grid(args.seed_mask, image, "seed mask")
        elif args.seed:
            kwargs["seed"] = tuple(args.seed)
        else:
            raise ValueError("region growing needs --seed z y x or --seed-mask FILE")
        kwargs["tolerance"] = args.tolerance
    elif method in ACTIVE_CONTOUR_METHODS:
        kwargs["iterations"] = args.iterations
        kwargs["smoothing"] = args.smoothing
        if args.init:
            kwargs["init"] = _read_on_grid(args.init, image, "initial mask")
        if method == "geodesic" and args.balloon is not None:
            kwargs["balloon"] = args.balloon
    labels = run_with_progress(baseline_job(method, image.data, **kwargs), desc=method,
                               quiet=args.quiet)
    provenance = {
        "baseline": method,
        "source_image": str(args.image),
        "parameters": {k: v for k, v in kwargs.items() if k not in ("seed", "init")},
    }
    if method == "region_growing":
        provenance["seed"] = args.seed_mask or list(args.seed)
    if args.init and method in ACTIVE_CONTOUR_METHODS:
        provenance["init"] = args.init
    out = image.with_data(labels, is_labels=True, metadata=provenance)
    write_volume(out, args.output, provenance=provenance)
    logger.info("wrote %s (%d voxels labelled)", args.output, int(labels.sum()))
    return 0
