"""``attnseg finetune IMAGES LABELS --base MODEL -o NEW_MODEL``: fine-tune a model on corrected
labels (the same core as the Fine-tune widget). ``IMAGES`` and ``LABELS`` are files (comma-
separated for several scans, in the same order); ``--reviewed-slices 3,7,12`` limits training to
those slices (axis 0) of every volume (default: all slices; an empty list is an error). The new
weights become a new version of the base model's registry name (or ``--name``; a ``--base``
folder outside the registry needs ``--name``) only if they beat the base on held-out reviewed
slices, and are copied to ``-o``; the version becomes active only when that validation can be
trusted (see :mod:`napari_attnseg.training.finetune`). Without an improvement nothing is saved.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from ._common import positive_int
from ._scribbles import add_finetune_arguments, sparse_train_options
from ._spacing import add_spacing_argument, apply_spacing

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", help="scan file(s), comma-separated")
    parser.add_argument("labels", help="corrected label file(s) on the same grids, comma-separated")
    parser.add_argument("--base", required=True, help="model name, name@version or folder to start from")
    parser.add_argument("-o", "--output", default=None, help="also write the new model folder here")
    parser.add_argument("--name", default=None,
                        help="registry name for the new version (default: the base's registry name; required when "
                             "--base is a folder outside the registry)")
    parser.add_argument("--reviewed-slices", default=None,
                        help="comma-separated slice indices (axis 0) that were corrected (default: all)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps-per-epoch", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, nargs="+", default=None, help="default: 128 128 (2D)")
    parser.add_argument("--lr", type=float, default=1e-4,
                        help="learning rate (default 1e-4; larger values can wreck a trained base)")
    parser.add_argument("--max-seconds", type=float, default=None, help="time budget in seconds")
    parser.add_argument("--freeze-encoder", action="store_true")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--precision", default="fp32", help="fp32 or bf16")
    parser.add_argument("--seed", type=int, default=0)
    add_spacing_argument(parser)
    parser.add_argument("--threads", type=positive_int, default=None)
    add_finetune_arguments(parser)  # --ignore-label / --pairwise-weight: sparse labels
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def parse_slices(text: str | None, depth: int) -> "object":
    """Per-slice flags of length ``depth`` from '3,7,12' (None: the option was not given, all
    slices reviewed). An empty list ("" or ",") is an error, never "all"."""
    import numpy as np

    from ..errors import TrainingDataError

    if text is None:
        return None
    try:
        idx = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError as exc:
        raise TrainingDataError(f"--reviewed-slices must be comma-separated integers, got {text!r}") from exc
    if not idx:
        raise TrainingDataError(f"--reviewed-slices {text!r} lists no slice; give the corrected slice indices "
                                "(e.g. 3,7,12), or leave the option out to train on every slice")
    bad = [i for i in idx if not 0 <= i < depth]
    if bad:
        raise TrainingDataError(f"--reviewed-slices {bad} are outside 0..{depth - 1}")
    flags = np.zeros(depth, bool)
    flags[idx] = True
    return flags


def _checked_labels(lab, path, ignore):
    """Labels as whole non-negative numbers (1.3 or a CT image is an error, never rounded); the
    ``--ignore-label`` value (unannotated voxels) is left for
    :func:`~napari_attnseg.training.dataset.sparse_labels`."""
    from ..io.validate import require_labels

    if ignore is None:
        return lab.with_data(require_labels(lab.data, path, "the labels"), is_labels=True)
    import numpy as np

    require_labels(np.where(lab.data == ignore, 0, lab.data), path, "the labels")
    return lab


def run(args: argparse.Namespace) -> int:
    import torch

    from ..io import read_volume
    from ..model.checkpoint import load_model
    from ..model.registry import ModelRegistry, check_name
    from ..training.dataset import TrainingPair, sparse_labels
    from ..training.finetune import finetune_job
    from ..training.loop import TrainConfig
    from ._common import run_with_progress

    if args.threads:
        torch.set_num_threads(args.threads)
    images = [Path(p) for p in args.images.split(",") if p]
    labels = [Path(p) for p in args.labels.split(",") if p]
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} image(s) but {len(labels)} label file(s); give one label file per image")
    if args.output and Path(args.output).exists():
        raise ValueError(f"{args.output} already exists; choose another output folder")
    from ._common import check_outputs, check_patch_size, log_read_warnings

    check_outputs([("-o", args.output)], images + labels, sidecars=())  # before any training
    check_patch_size(args.patch_size)
    registry = ModelRegistry()
    if args.name is not None:
        check_name(args.name)  # before any work
    base = load_model(registry.resolve(args.base))
    dims = base.spec.arch.spatial_dims
    check_patch_size(args.patch_size, dims)
    pairs = []
    for ip, lp in zip(images, labels):
        from ..io.validate import require_same_grid

        img = log_read_warnings(apply_spacing(read_volume(ip), args.spacing, ip), ip)
        lab = log_read_warnings(apply_spacing(read_volume(lp), args.spacing, lp), lp)
        require_same_grid(lab, img, f"the labels {lp}", f"the image {ip}")  # shape and affine
        lab = _checked_labels(lab, lp, getattr(args, "ignore_label", None))
        reviewed = parse_slices(args.reviewed_slices, img.shape[0] if img.ndim == 3 else 1)  # 2D: slice 0
        if img.ndim != 3:
            reviewed = None
        lab, reviewed = sparse_labels(lab, reviewed, args.ignore_label, lp)
        pairs.append(TrainingPair(img, lab, reviewed, ip.name))
    patch = tuple(args.patch_size or ((128, 128) if dims == 2 else (64, 64, 64)))
    config = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                         patch_size=patch, lr=args.lr, max_seconds=args.max_seconds,
                         freeze_encoder=args.freeze_encoder, augment=not args.no_augment, precision=args.precision,
                         seed=args.seed, num_threads=args.threads, **sparse_train_options(args))
    result = run_with_progress(finetune_job(base, pairs, config, registry, args.name), desc="finetune",
                               quiet=args.quiet)
    entry = result.entry
    if entry is None:
        print(result.note + (f"; {args.output} not written" if args.output else ""))
        return 0
    print(f"{result.note} ({entry.path})")
    if args.output:
        _copy_model(entry.path, Path(args.output))
        print(f"wrote {args.output}")
    return 0


def _copy_model(src: Path, out: Path) -> None:
    """Copy a model folder to ``out`` through a hidden temporary folder renamed into place (a
    kill never leaves a half-copied folder at ``out``)."""
    import os

    from ..errors import WriteError
    from ..model._atomic import temp_name

    tmp = out.parent / temp_name(out.name)
    try:
        shutil.copytree(src, tmp)
        os.rename(tmp, out)
    except OSError as exc:
        raise WriteError(out, f"could not write the model folder: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
