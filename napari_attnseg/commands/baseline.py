"""``attnseg baseline METHOD IMAGE -o OUT``: a traditional segmentation (Otsu, region growing,
Chan-Vese or geodesic active contours) written as labels on the image's grid."""

from __future__ import annotations

import argparse
import logging

from ._common import add_input_options, run_with_progress

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
    add_input_options(parser, what="the image")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _read_on_grid(path: str, image, what: str):
    from ..io import read_volume
    from ..io.validate import require_labels, require_same_grid

    vol = read_volume(path)
    require_same_grid(vol, image, f"the {what} {path}", f"the image {image.source}")
    return require_labels(vol.data, path, f"the {what}")


def run(args: argparse.Namespace) -> int:
    from ..baselines import ACTIVE_CONTOUR_METHODS, baseline_job, canonical_method
    from ..io import read_volume, write_volume

    from ._common import check_outputs, input_kwargs, log_read_warnings

    method = canonical_method(args.method)
    check_outputs([("-o", args.output)], [args.image, args.seed_mask, args.init])
    image = log_read_warnings(read_volume(args.image, **input_kwargs(args)), args.image)
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
