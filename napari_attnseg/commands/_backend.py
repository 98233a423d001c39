"""``--backend`` for ``attnseg predict``: PyTorch (default) or ONNX Runtime.

:func:`load_predict_model` returns the model ``predict_job`` runs and the config to run it with:
the registry/folder model as loaded (``torch``), the same model with its network exported once
to ONNX and run by ONNX Runtime (``onnxruntime``; CPU), or an ``.onnx`` file given as
``--model`` (always ONNX Runtime). ONNX Runtime is not the default: on the CPUs measured it was
faster per forward pass, but see BENCHMARKS.md / benchmarks/bench_onnx.py for the end-to-end
figures that decide it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime")


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="torch", choices=BACKENDS,
                        help="run the network with PyTorch (default) or ONNX Runtime (CPU; "
                             "needs the 'onnx' extra; a --model ending in .onnx implies it)")


def load_predict_model(args: argparse.Namespace, volume: Any, config: Any,
                       resolve: Callable[..., Any]) -> tuple[Any, Any]:
    """(model, config) for ``args.backend`` / ``args.model``; ``resolve(ref, volume)`` finds a
    registry model folder."""
    from ..model.checkpoint import load_model

    backend = getattr(args, "backend", "torch") or "torch"
    threads = getattr(args, "threads", None)
    ref = getattr(args, "model", None)
    if ref and str(ref).lower().endswith(".onnx"):
        from ..inference.onnx_backend import load_onnx_file

        model, backend = load_onnx_file(ref, threads), "onnxruntime"
    else:
        model = load_model(resolve(ref, volume), device="cpu")
        if backend == "onnxruntime":
            from ..inference.onnx_backend import onnx_model

            model = onnx_model(model, threads)
    args.backend = backend  # recorded in the provenance
    if backend == "onnxruntime":
        if config.device not in ("auto", "cpu"):
            logger.warning("--backend onnxruntime runs on the CPU; --device %s ignored",
                           config.device)
        config = dataclasses.replace(config, device="cpu")
        logger.info("network run by ONNX Runtime (%s)", model.model_id)
    return model, config
