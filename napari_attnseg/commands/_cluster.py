"""``attnseg predict IN_DIR -o OUT_DIR --scheduler ADDRESS|local``: a folder over a Dask cluster.

Dask distributed (the ``cluster`` extra) rather than Ray: it is pure Python, pip-installable
without a runtime of its own, a ``LocalCluster`` runs on one machine (and in the tests) with the
same client code as a real cluster, and a scheduler started by hand, by ``dask-jobqueue`` on
SLURM/PBS or by Kubernetes is reached by its ``tcp://host:port`` address alone.

Each case is one task (:func:`run_case`): the worker reads the scan, predicts and writes the
output atomically through :func:`._folder.segment_case`, the serial path's own per-case code
(same names, sidecars, keep/overwrite rules and messages). A worker process loads each model
once (:func:`_cached_model`, keyed by the model folder and a fingerprint of its files) and runs
PyTorch with one thread unless ``--threads``. Outcomes are logged as the tasks complete; a
failing case (or a worker that died on it) is reported by name and the others go on (exit
status 2 at the end); Ctrl-C cancels the tasks and closes the client and the local cluster.

The input and output folders must be reachable at the same paths from every worker (a shared
filesystem), and the workers need napari-attnseg and the model installed.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import uuid
from pathlib import Path
from typing import Any

from ._folder import CaseOutcome, _at_least, _output, heads, one_line, report, segment_case

logger = logging.getLogger(__name__)

LOCAL = "local"
DEFAULT_WORKERS = 2
#: seconds to wait for a scheduler given by address
CONNECT_TIMEOUT = 20


def add_cluster_arguments(group: Any) -> None:
    group.add_argument("--scheduler", default=None, metavar="ADDRESS|local",
                       help="spread the cases over a Dask cluster: a scheduler address "
                            "(tcp://host:port; the folders must be on a filesystem the workers "
                            "share) or 'local' for a cluster of --workers processes on this "
                            "machine (needs the 'cluster' extra)")
    group.add_argument("--workers", type=_at_least(1), default=None,
                       help=f"worker processes of --scheduler local (default {DEFAULT_WORKERS}, "
                            "one thread each)")


def distributed_module() -> Any:
    try:
        import distributed
    except ImportError as exc:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("dask[distributed]", "cluster",
                                     "--scheduler (a Dask cluster)") from exc
    return distributed


# ------------------------------------------------------------------ on the workers
def fingerprint(folder: str | Path) -> str:
    """sha256 of the model's config.json and the name, size and mtime of its other files (a
    ``.onnx`` file: of its own): a model retrained in place is loaded again."""
    path = Path(folder)
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for p in files:
        if p.name == "config.json":
            digest.update(p.read_bytes())
        st = p.stat()
        digest.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=4)
def _cached_model(folder: str, sha: str, backend: str, threads: int, base: Any
                  ) -> tuple[Any, Any, str]:
    """(model, config, backend) for a model folder or .onnx file, loaded once per worker."""
    from ._backend import load_predict_model

    ns = argparse.Namespace(model=folder, backend=backend, threads=threads)
    model, config = load_predict_model(ns, None, base, lambda ref, volume: Path(ref))
    return model, config, ns.backend


@functools.lru_cache(maxsize=16)
def _named_model(ref: str, modality: str, anatomy: str) -> Path:
    """The folder of ``--model REF``, resolved (and its fit warned about) once per worker, as
    the serial run does once per run."""
    from .predict import resolve_model_folder

    return Path(resolve_model_folder(ref, argparse.Namespace(modality=modality,
                                                             header={"anatomy": anatomy})))


def model_cache_info() -> tuple[int, int]:
    """(hits, misses) of this process's model cache (``client.run(model_cache_info)``)."""
    info = _cached_model.cache_info()
    return info.hits, info.misses


def run_case(args: argparse.Namespace, case: Any, target: Path, head: str,
             base: Any) -> CaseOutcome:
    """The task: :func:`segment_case` on a worker, the reader's warnings kept in the outcome."""
    import torch

    from .predict import resolve_model_folder

    torch.set_num_threads(args.threads)
    notes: list[tuple[int, str]] = []

    def get_model(a: argparse.Namespace, volume: Any) -> tuple[Any, Any]:
        ref = a.model
        if ref and str(ref).lower().endswith(".onnx"):
            folder = Path(ref)
        elif ref:
            folder = _named_model(str(ref), str(getattr(volume, "modality", "") or ""),
                                  str(dict(getattr(volume, "header", {}) or {}).get("anatomy",
                                                                                    "")))
        else:  # chosen for each scan's modality and anatomy, as the serial run does
            folder = Path(resolve_model_folder(None, volume))
        model, config, a.backend = _cached_model(str(folder), fingerprint(folder), a.backend,
                                                 a.threads, base)
        return model, config

    outcome = segment_case(args, case, target, head, get_model,
                           lambda level, text: notes.append((level, text)))
    outcome.notes = notes
    try:
        from distributed import get_worker

        outcome.message += f" on {get_worker().address}"
    except (ImportError, ValueError):
        pass
    return outcome


# ------------------------------------------------------------------ on the client
def _portable(args: argparse.Namespace) -> argparse.Namespace:
    """The options a worker needs: plain values only, a local model path made absolute,
    PyTorch threads 1 unless --threads, no progress bars."""
    plain = (str, int, float, bool, type(None), list, tuple)
    out = argparse.Namespace(**{k: v for k, v in vars(args).items() if isinstance(v, plain)})
    if out.model and Path(out.model).expanduser().exists():
        out.model = str(Path(out.model).expanduser().resolve())
    out.threads = args.threads or 1
    out.quiet = True
    return out


def _connect(args: argparse.Namespace) -> tuple[Any, Any]:
    """(client, cluster or None) for ``--scheduler``."""
    distributed = distributed_module()
    from ..errors import AttnsegError

    if args.scheduler == LOCAL:
        n = args.workers or DEFAULT_WORKERS
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address="127.0.0.1:0")
        try:
            return distributed.Client(cluster), cluster
        except BaseException:
            cluster.close()
            raise
    try:
        client = distributed.Client(args.scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise AttnsegError(f"--scheduler {args.scheduler}: no Dask scheduler answered "
                           f"({one_line(exc)}); start one (dask scheduler / dask worker) or use "
                           "--scheduler local") from None
    return client, None


def run_on_cluster(args: argparse.Namespace, cases: list, out_dir: Path,
                   base: Any) -> list[CaseOutcome]:
    """Every case as one task on the cluster; the outcomes in case order."""
    distributed = distributed_module()
    task_args = _portable(args)
    chatter = logging.getLogger("distributed")  # its INFO lines would drown the cases' lines
    level = chatter.level
    if not logger.isEnabledFor(logging.DEBUG):
        chatter.setLevel(logging.WARNING)
    try:
        return _run(distributed, client_and_cluster=_connect(args), cases=cases,
                    out_dir=out_dir, fmt=args.format, task_args=task_args, base=base)
    finally:
        chatter.setLevel(level)


def _run(distributed: Any, client_and_cluster: tuple[Any, Any], cases: list, out_dir: Path,
         fmt: str, task_args: argparse.Namespace, base: Any) -> list[CaseOutcome]:
    client, cluster = client_and_cluster
    futures: dict[Any, tuple[int, Any, str]] = {}
    outcomes: dict[int, CaseOutcome] = {}
    try:
        n_workers = len(client.scheduler_info().get("workers", {}))
        logger.info("%d cases on the Dask cluster at %s (%d workers)", len(cases),
                    client.scheduler.address, n_workers)
        for i, (case, head) in enumerate(zip(cases, heads(cases))):
            target = _output(out_dir, case.name, fmt)
            fut = client.submit(run_case, task_args, case, target, head, base, pure=False,
                                key=f"attnseg-{case.name}-{uuid.uuid4().hex[:12]}")
            futures[fut] = (i, case, head)
        for fut in distributed.as_completed(list(futures)):
            i, case, head = futures[fut]
            try:
                outcome = fut.result()
            except Exception as exc:  # the task itself died (worker lost, killed, ...)
                outcome = CaseOutcome(case.name, "failed", f"{head}: failed: {one_line(exc)}")
            report(outcome)
            outcomes[i] = outcome
    except KeyboardInterrupt:
        client.cancel(list(futures), force=True)
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return [outcomes[i] for i in sorted(outcomes)]
