"""Which device runs a model, how to describe it to the user, and when to autocast.

``select_device("auto")`` picks CUDA, then Apple MPS, then the CPU. An explicit choice is
honoured or refused with a message (asking for CUDA on a machine without it is an error, not a
silent fallback). Autocast is used only where it helps: AMP (float16) on CUDA, and bfloat16 on
the CPU. ``precision="auto"`` (the inference default, :func:`resolve_precision`) is bfloat16 on a
CPU with native bf16 instructions (AMX or AVX512-BF16: about 2x faster there, the same Dice on the
held-out test sets, BENCHMARKS.md) and float32 everywhere else (an AVX2-only CPU, CUDA, MPS).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

from .._options import choose
from ..errors import ModelError

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "amp", "bf16")


def cpu_has_native_bf16() -> bool:
    """True when this CPU runs bf16 matrix kernels natively (AMX tiles or AVX512-BF16)."""
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_amx_tile_supported() or cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"auto"`` -> ``"bf16"`` on a CPU with native bf16 (:func:`cpu_has_native_bf16`), else
    ``"fp32"``; any other choice is returned as it is (checked)."""
    precision = choose(precision, PRECISIONS, "precision")
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cpu" and cpu_has_native_bf16() else "fp32"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(pref: str | torch.device = "auto") -> torch.device:
    """Resolve a device preference ("auto", "cpu", "cuda", "cuda:1", "mps") to a torch.device.

    Raises ``ValueError`` for an unknown name and :class:`ModelError` when the requested
    accelerator is absent.
    """
    if isinstance(pref, torch.device):
        pref = str(pref)
    text = str(pref).strip().lower()
    base, _, index = text.partition(":")
    base = choose(base, DEVICES, "device")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(
                "device 'cuda' was requested but no CUDA GPU is available to PyTorch "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                "choose device 'auto' or 'cpu', or install a CUDA build of PyTorch"
            )
        if index:
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise ModelError(
                    f"device '{pref}': there are {torch.cuda.device_count()} CUDA device(s)"
                )
            return torch.device("cuda", int(index))
        return torch.device("cuda")
    if base == "mps":
        if not _mps_available():
            raise ModelError(
                "device 'mps' was requested but Apple MPS is not available; choose 'auto' or 'cpu'"
            )
        return torch.device("mps")
    return torch.device("cpu")


def device_summary(device: torch.device | str) -> str:
    """One line for the user: "CUDA: NVIDIA H100 (80 GiB)", "Apple MPS", "CPU (no GPU found)"."""
    device = torch.device(device)
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        return f"CUDA: {props.name} ({props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "Apple MPS"
    threads = torch.get_num_threads()
    if torch.cuda.is_available() or _mps_available():
        return f"CPU ({threads} threads; a GPU is available but not selected)"
    return f"CPU (no GPU found; {threads} threads)"


def is_cpu(device: torch.device | str) -> bool:
    return torch.device(device).type == "cpu"


def autocast_context(device: torch.device | str, precision: str = "fp32") -> Any:
    """A context manager for the forward pass.

    ``"fp32"``: no autocast. ``"amp"``: float16 autocast on CUDA (float32 elsewhere, with a log
    line). ``"bf16"``: bfloat16 autocast on CUDA or the CPU (MPS: float32). ``"auto"``: see
    :func:`resolve_precision`.
    """
    device = torch.device(device)
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "amp":
        if device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        logger.info("precision 'amp' applies to CUDA only; running %s in float32", device.type)
        return contextlib.nullcontext()
    # bf16
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    logger.info("precision 'bf16' is not used on %s; running in float32", device.type)
    return contextlib.nullcontext()
