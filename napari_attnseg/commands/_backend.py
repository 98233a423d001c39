"""``--backend`` for ``attnseg predict``: auto, PyTorch or ONNX Runtime.

:func:`load_predict_model` returns the model ``predict_job`` runs and the config to run it with
(``PredictConfig.backend`` set from ``--backend``; :mod:`napari_attnseg.inference.backend`
chooses and exports): ``torch`` runs the network as loaded; ``onnxruntime`` exports it once
(cached in the user's cache folder) and runs ONNX Runtime on the CPU; ``auto`` does that on
the CPU in fp32 when the ``onnx`` extra is installed and falls back to PyTorch with one log
line otherwise (CUDA, another precision, onnxruntime missing, a failed export). An ``.onnx``
file given as ``--model`` always runs in ONNX Runtime. The default is
:data:`~napari_attnseg.inference.backend.DEFAULT_BACKEND` (see BENCHMARKS.md, issue 14, for
the figures that decide it); the provenance records which backend ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")


#: ``--backend``'s default, as :data:`napari_attnseg.inference.backend.DEFAULT_BACKEND` (a test
#: keeps them equal; the inference package imports torch, the argument parser does not).
DEFAULT = "torch"


def _default() -> str:
    from ..inference.backend import DEFAULT_BACKEND

    return DEFAULT_BACKEND


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    default = DEFAULT
    parser.add_argument("--backend", default=None, choices=BACKENDS,
                        help="run the network with ONNX Runtime on the CPU in fp32 when the "
                             "'onnx' extra is installed, else PyTorch (auto), always PyTorch "
                             "(torch) or always ONNX Runtime (onnxruntime; CPU). The first "
                             "ONNX Runtime run of a model exports it into the user's cache "
                             f"(seconds). Default: {default}; a --model ending in .onnx "
                             "implies onnxruntime")


def load_predict_model(args: argparse.Namespace, volume: Any, config: Any,
                       resolve: Callable[..., Any]) -> tuple[Any, Any]:
    """(model, config) for ``args.backend`` / ``args.model``; ``resolve(ref, volume)`` finds a
    registry model folder."""
    from ..model.checkpoint import load_model

    backend = getattr(args, "backend", None) or _default()
    threads = getattr(args, "threads", None)
    ref = getattr(args, "model", None)
    if ref and str(ref).lower().endswith(".onnx"):
        from ..inference.onnx_backend import load_onnx_file

        model, backend = load_onnx_file(ref, threads), "onnxruntime"
    else:
        model = load_model(resolve(ref, volume), device="cpu")
    args.backend = backend
    if backend == "onnxruntime":
        if config.device not in ("auto", "cpu"):
            logger.warning("--backend onnxruntime runs on the CPU; --device %s ignored",
                           config.device)
        config = dataclasses.replace(config, device="cpu")
        logger.info("network run by ONNX Runtime (%s)", model.model_id)
    return model, dataclasses.replace(config, backend=backend)
