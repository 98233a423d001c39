"""``attnseg predict IN_DIR -o OUT_DIR``: segment every scan in a folder, one output per case.

The cases are :func:`napari_attnseg.io.cohort.find_cases` (scan files by name, mirrored
subfolders, DICOM series found explicitly and reported as such). Each case is written to
``OUT_DIR/<name>.<format>`` (``nii.gz`` by default, ``seg.nrrd``, or ``dcm`` for DICOM cases)
with the usual sidecar; an existing output is kept (the run resumes) unless ``--overwrite``.
``--part-id I --num-parts N`` segments part I of N of the sorted cases, as nnU-Net shards a
cohort for SLURM arrays. Models are loaded once per model folder; a case that fails is reported
and the others go on (exit status 2 if any failed). ``--scheduler ADDRESS|local`` spreads the
cases over a Dask cluster (:mod:`._cluster`), each case through the same :func:`segment_case`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORMATS = ("nii.gz", "nii", "seg.nrrd", "dcm", "rtstruct.dcm")
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
                       help="output format per case (default nii.gz; dcm: DICOM-SEG, rtstruct.dcm: "
                            "RTSTRUCT, both for DICOM cases)")
    group.add_argument("--overwrite", action="store_true",
                       help="segment cases whose output exists (default: keep them, resume)")
    from ._cluster import add_cluster_arguments

    add_cluster_arguments(group)


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
        if getattr(args, "scheduler", None) or getattr(args, "workers", None):
            raise ValueError("--scheduler spreads a folder of scans over a Dask cluster: give "
                             "IN_DIR and an output folder -o OUT_DIR")
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
    if getattr(args, "workers", None) is not None and getattr(args, "scheduler", None) != "local":
        raise ValueError("--workers sizes the cluster that --scheduler local starts; a scheduler "
                         "at an address has its own workers")
    if args.part_id is None:
        return None
    return args.part_id, args.num_parts


@dataclass
class CaseOutcome:
    """What became of one case: ``status`` is "segmented", "kept" or "failed"; ``message`` the
    line the run logs for it; ``notes`` (level, text) the reader's warnings when they could not
    be logged where the case ran (a cluster worker)."""

    name: str
    status: str
    message: str
    seconds: float = 0.0
    notes: list = field(default_factory=list)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, MemoryError):
        return f"not enough memory ({text or 'MemoryError'}); try a smaller batch"
    return text or type(exc).__name__


def segment_case(args: argparse.Namespace, case: Any, target: Path, head: str,
                 get_model: Callable[[argparse.Namespace, Any], tuple[Any, Any]],
                 emit: Callable[[int, str], None]) -> CaseOutcome:
    """Segment ``case`` to ``target``, the one per-case path of the serial and the cluster run:
    an existing output is kept unless ``--overwrite``; the case is read (``emit`` gets the
    reader's warnings), ``get_model(args, volume)`` gives (model, config), the labels are
    written atomically with their sidecar. An error (a MemoryError only in serial runs, where
    the next cases would hit it too) is returned as a "failed" outcome naming the case."""
    from ..inference.predictor import predict_job
    from ..io import write_volume
    from ._common import run_with_progress
    from ._spacing import read_with_spacing

    if target.exists() and not args.overwrite:
        return CaseOutcome(case.name, "kept", f"{head} -> {target} exists, kept (--overwrite "
                                              "to redo)")
    t0 = time.perf_counter()
    try:
        kw = {"series_uid": case.series_uid} if case.series_uid else {}
        volume = read_with_spacing(case.path, args.spacing, modality=args.modality or None, **kw)
        for msg in volume.warnings:
            emit(logging.WARNING, f"{case.path}: {msg}")
        model, config = get_model(args, volume)
        result = run_with_progress(predict_job(model, volume, config), desc=case.name,
                                   quiet=args.quiet)
        result.provenance.update(case=case.name, case_source=str(case.path))
        target.parent.mkdir(parents=True, exist_ok=True)
        write_volume(volume.with_data(result.labels, is_labels=True), target,
                     provenance=result.provenance)
    except MemoryError:
        if not getattr(args, "scheduler", None):
            raise
        return CaseOutcome(case.name, "failed", f"{head}: failed: {one_line(MemoryError())}")
    except Exception as exc:  # one bad case must not stop a cohort run; reported by finish()
        return CaseOutcome(case.name, "failed", f"{head}: failed: {one_line(exc)}")
    seconds = time.perf_counter() - t0
    return CaseOutcome(case.name, "segmented", f"{head} -> {target} ({seconds:.1f} s)", seconds)


def report(outcome: CaseOutcome) -> None:
    for level, text in outcome.notes:
        logger.log(level, "%s", text)
    logger.log(logging.ERROR if outcome.status == "failed" else logging.INFO, "%s",
               outcome.message)


def finish(out_dir: Path, outcomes: list[CaseOutcome]) -> int:
    """The closing line (counts, the failed cases by name, in case order); 2 if any failed."""
    count = {s: [o.name for o in outcomes if o.status == s]
             for s in ("segmented", "kept", "failed")}
    failed = count["failed"]
    sys.stderr.write(f"{out_dir}: {len(count['segmented'])} segmented, {len(count['kept'])} "
                     f"kept, {len(failed)} failed"
                     + (f" ({', '.join(failed)})" if failed else "") + "\n")
    return 2 if failed else 0


def heads(cases: list) -> list[str]:
    return [f"[{i}/{len(cases)}] {c.name}: {c.describe()}" for i, c in enumerate(cases, start=1)]


def _prepare(args: argparse.Namespace) -> tuple[list, Path, Any]:
    """The cases of this part, the output folder and the PredictConfig (errors before work)."""
    from ..inference.predictor import PredictConfig
    from ..io.cohort import find_cases, shard, summary

    part = _check(args)
    inp, out_dir = Path(args.input), Path(args.output)
    if out_dir.resolve() == inp.resolve() or inp.resolve() in out_dir.resolve().parents:
        raise ValueError(f"the output folder {out_dir} is inside the input folder {inp}: its "
                         "results would be taken for scans next time; choose another folder")
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
    return cases, out_dir, base


def run_folder(args: argparse.Namespace) -> int:
    """Segment each case of part ``--part-id`` (or all of them), here one after the other or
    over a Dask cluster (``--scheduler``); see the module doc."""
    if getattr(args, "scheduler", None):
        from ._cluster import distributed_module, run_on_cluster

        distributed_module()  # a missing extra: said before any work
        cases, out_dir, base = _prepare(args)
        return finish(out_dir, run_on_cluster(args, cases, out_dir, base))
    cases, out_dir, base = _prepare(args)
    import torch

    from ._backend import load_predict_model
    from .predict import resolve_model_folder

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    models: dict[str, tuple[Any, Any]] = {}

    def get_model(a: argparse.Namespace, volume: Any) -> tuple[Any, Any]:
        key = str(a.model or resolve_model_folder(None, volume))
        if key not in models:
            models[key] = load_predict_model(a, volume, base, resolve_model_folder)
        return models[key]

    outcomes = []
    for case, head in zip(cases, heads(cases)):
        outcome = segment_case(args, case, _output(out_dir, case.name, args.format), head,
                               get_model, logger.log)
        report(outcome)
        outcomes.append(outcome)
    return finish(out_dir, outcomes)
