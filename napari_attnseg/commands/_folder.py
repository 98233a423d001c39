"""``attnseg predict IN_DIR -o OUT_DIR``: segment every scan in a folder, one output per case.

The cases are :func:`napari_attnseg.io.cohort.find_cases` (scan files by name, mirrored
subfolders, DICOM series found explicitly and reported as such). Each case is written to
``OUT_DIR/<name>.<format>`` (``nii.gz`` by default, ``seg.nrrd``, or ``dcm`` for DICOM cases)
with the usual sidecar; an existing output is kept (the run resumes) unless ``--overwrite``.
``--part-id I --num-parts N`` segments part I of N of the sorted cases, as nnU-Net shards a
cohort for SLURM arrays. Models are loaded once per model folder; a case that fails is reported
and the others go on (exit status 2 if any failed).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORMATS = ("nii.gz", "nii", "seg.nrrd", "dcm")
#: an output name ending in one of these is a file, not an output folder
FILE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".dcm", ".mha", ".mhd")


def _at_least(lo: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {value}")
        return value
    return parse


def add_folder_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("folders (IN_DIR -o OUT_DIR)")
    group.add_argument("--part-id", type=_at_least(0), default=None,
                       help="segment part I (0-based) of --num-parts of the sorted cases")
    group.add_argument("--num-parts", type=_at_least(1), default=None,
                       help="number of parts the cases are split into (SLURM array size)")
    group.add_argument("--format", default="nii.gz", choices=FORMATS,
                       help="output format per case (default nii.gz; dcm: DICOM-SEG for DICOM "
                            "cases)")
    group.add_argument("--overwrite", action="store_true",
                       help="segment cases whose output exists (default: keep them, resume)")


def _is_file_name(path: str) -> bool:
    return Path(path).name.lower().endswith(FILE_SUFFIXES) and not Path(path).is_dir()


def folder_mode(args: argparse.Namespace) -> bool:
    """True for IN_DIR -o OUT_DIR. A DICOM folder with a file output stays one scan; a folder
    holding other scans with a file output is refused with the fix."""
    sharded = args.part_id is not None or args.num_parts is not None
    inp = Path(args.input)
    if not inp.is_dir() or _is_file_name(args.output):
        if sharded:
            raise ValueError("--part-id/--num-parts split a folder of scans: give IN_DIR and an "
                             "output folder -o OUT_DIR")
        if inp.is_dir():
            _refuse_many(inp, args.output)
        return False
    return True


def _refuse_many(inp: Path, output: str) -> None:
    from ..io.cohort import DICOM_KIND, find_cases, summary

    try:
        cases = find_cases(inp)
    except Exception:  # discovery problems: let the single-scan reader report them
        return
    if len(cases) > 1 and any(c.kind != DICOM_KIND for c in cases):
        raise ValueError(f"{inp} holds {summary(cases)}; give an output folder (-o OUT_DIR, "
                         f"one output per scan) instead of the file {output}, or name one scan")


def _output(out_dir: Path, name: str, fmt: str) -> Path:
    return out_dir.joinpath(*name.split("/")).with_name(name.split("/")[-1] + "." + fmt)


def _check(args: argparse.Namespace) -> tuple[int, int] | None:
    if args.probabilities:
        raise ValueError("--probabilities names one file; in folder mode it is not available "
                         "(segment a single scan to get its probability map)")
    if getattr(args, "series_uid", None):
        raise ValueError("--series-uid picks one series; in folder mode every series is a case")
    if (args.part_id is None) != (args.num_parts is None):
        raise ValueError("give --part-id and --num-parts together")
    if args.part_id is None:
        return None
    return args.part_id, args.num_parts


def run_folder(args: argparse.Namespace) -> int:
    """Segment each case of part ``--part-id`` (or all of them); see the module doc."""
    import torch

    from ..inference.predictor import PredictConfig, predict_job
    from ..io import write_volume
    from ..io.cohort import find_cases, shard, summary
    from ._backend import load_predict_model
    from ._common import run_with_progress
    from ._spacing import read_with_spacing
    from .predict import resolve_model_folder

    part = _check(args)
    inp, out_dir = Path(args.input), Path(args.output)
    if out_dir.resolve() == inp.resolve() or inp.resolve() in out_dir.resolve().parents:
        raise ValueError(f"the output folder {out_dir} is inside the input folder {inp}: its "
                         "results would be taken for scans next time; choose another folder")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cases = find_cases(inp)
    if not cases:
        raise ValueError(f"no scans found in {inp} (NIfTI, NRRD, MetaImage, 2D images or DICOM "
                         "series, up to 3 folders deep)")
    logger.info("%s holds %s", inp, summary(cases))
    if part is not None:
        mine = shard(cases, *part)
        logger.info("part %d of %d (0-based): %d of %d cases", part[0], part[1], len(mine),
                    len(cases))
        cases = mine
    base = PredictConfig(overlap=args.overlap, batch_size=args.batch_size, tta=args.tta,
                         device=args.device, precision=args.precision, modality=args.modality,
                         window=args.window)
    models: dict[str, tuple[Any, Any]] = {}
    done, skipped, failed = [], [], []
    for i, case in enumerate(cases, start=1):
        target = _output(out_dir, case.name, args.format)
        head = f"[{i}/{len(cases)}] {case.name}: {case.describe()}"
        if target.exists() and not args.overwrite:
            logger.info("%s -> %s exists, kept (--overwrite to redo)", head, target)
            skipped.append(case.name)
            continue
        t0 = time.perf_counter()
        try:
            kw = {"series_uid": case.series_uid} if case.series_uid else {}
            volume = read_with_spacing(case.path, args.spacing, modality=args.modality or None,
                                       **kw)
            for msg in volume.warnings:
                logger.warning("%s: %s", case.path, msg)
            key = str(args.model or resolve_model_folder(None, volume))
            if key not in models:
                models[key] = load_predict_model(args, volume, base, resolve_model_folder)
            model, config = models[key]
            result = run_with_progress(predict_job(model, volume, config), desc=case.name,
                                       quiet=args.quiet)
            result.provenance.update(backend=args.backend, case=case.name,
                                     case_source=str(case.path))
            target.parent.mkdir(parents=True, exist_ok=True)
            write_volume(volume.with_data(result.labels, is_labels=True), target,
                         provenance=result.provenance)
        except MemoryError:
            raise
        except Exception as exc:  # one bad case must not stop a cohort run; reported below
            logger.error("%s: failed: %s", head, " ".join(str(exc).split()))
            failed.append((case.name, str(exc)))
            continue
        logger.info("%s -> %s (%.1f s)", head, target, time.perf_counter() - t0)
        done.append(case.name)
    sys.stderr.write(f"{out_dir}: {len(done)} segmented, {len(skipped)} kept, "
                     f"{len(failed)} failed" + (f" ({', '.join(n for n, _ in failed)})"
                                                if failed else "") + "\n")
    return 2 if failed else 0
