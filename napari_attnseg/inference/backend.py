"""Which runtime runs the network: PyTorch or ONNX Runtime (``PredictConfig.backend``).

* ``"torch"``: the network as loaded (the fused PyTorch path).
* ``"onnxruntime"``: the network exported once to ONNX and run by ONNX Runtime on the CPU; an
  error when that cannot be done.
* ``"auto"``: ONNX Runtime when the run is on the CPU in fp32 (or precision ``"auto"``, which is
  then fp32), the network is an
  :class:`~napari_attnseg.model.attention_unet.AttentionUNet` in eval mode and the ``onnx``
  extra is installed; PyTorch otherwise, saying why in one log line (per network and reason).
  A failed export also falls back to PyTorch (a warning), and is not retried for that network.

The export is cached on disk in ``<cache>/onnx/`` (:func:`cache_root`: ``$ATTNSEG_CACHE``, else
the user's cache folder, e.g. ``$XDG_CACHE_HOME/napari-attnseg``; never a model folder or the
registry), keyed by the model's config (``config_sha256`` of its spec), the *in-memory* weights
(sha256 of the state dict, so a network changed after loading never runs a stale export), the
opset and the onnx, onnxruntime and torch versions. Entries are written atomically; an entry that
cannot be opened or no longer matches PyTorch on a check input is deleted and exported again. In
memory, the ONNX Runtime network is kept per network object and thread count (ONNX Runtime's
``intra_op_num_threads`` is ``torch.get_num_threads()`` at the call, so ``--threads`` applies to
both runtimes).

The first ``auto`` call for a model pays the export (seconds): call it where the inference
runs (the widget's worker, the CLI), not on a GUI thread; :func:`is_ready` says whether the
next call would export.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any

import torch

from .._options import choose

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")
#: What ``PredictConfig()``, the Segment widget and ``attnseg predict`` use. PyTorch: measured
#: end to end at 2 threads on the shipped models (benchmarks/bench_onnx.py, BENCHMARKS.md issue
#: 14), ONNX Runtime was 1.01-1.19x faster per prediction in a warm process, but a whole
#: ``attnseg predict`` process was 0.91-1.07x (importing onnxruntime, opening the session):
#: no end-to-end win. Before making "auto" the default, keep the export off the Segment
#: widget's GUI thread (its fast previews run synchronously; see :func:`is_ready`).
DEFAULT_BACKEND = "torch"

_lock = threading.RLock()
#: network -> {"state": state key, "sha": state sha256, "ort": {threads: OrtNetwork},
#:             "failed": reason or None, "logged": set of fallback reasons already logged}
_memo: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_backend(value: str) -> str:
    """The canonical spelling of a backend name (ValueError with a suggestion otherwise)."""
    return choose(value, BACKENDS, "backend")


def cache_root() -> Path:
    """``$ATTNSEG_CACHE``, else the user's cache folder for napari-attnseg."""
    env = os.environ.get("ATTNSEG_CACHE")
    if env:
        return Path(env)
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("napari-attnseg", appauthor=False))
    except ImportError:
        xdg = os.environ.get("XDG_CACHE_HOME")
        return (Path(xdg) if xdg else Path.home() / ".cache") / "napari-attnseg"


def onnx_available() -> str | None:
    """None when onnxruntime imports and onnx is installed, else what is missing (onnx itself,
    ~1 s to import, is imported only to export)."""
    import importlib.util

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed (pip install 'napari-attnseg[onnx]')"
    try:
        found = importlib.util.find_spec("onnx") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else "onnx is not installed (pip install 'napari-attnseg[onnx]')"


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _state_key(net: torch.nn.Module) -> tuple | None:
    """Cheap identity of the network's current weights (tensor versions and storages); None
    when it cannot be tracked (inference tensors)."""
    key = []
    for name, t in net.state_dict(keep_vars=True).items():
        if t.is_inference():
            return None
        key.append((name, t._version, t.data_ptr()))
    return tuple(key)


def state_sha256(net: torch.nn.Module) -> str:
    """sha256 of the network's state dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in net.state_dict().items():
        arr = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{arr.dtype}|{tuple(arr.shape)}|".encode())
        h.update(arr.reshape(-1).view(torch.uint8).numpy().tobytes() if arr.numel() else b"")
    return h.hexdigest()


def config_sha256(model: Any) -> str:
    """sha256 of the model spec's canonical JSON (what ``config_sha256`` covers)."""
    spec = model.spec.to_json_dict()
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_file(model: Any, weights_sha: str) -> Path:
    """The cache entry of ``model`` with weights ``weights_sha``."""
    import onnxruntime

    from .onnx_backend import OPSET

    key = json.dumps({"config": config_sha256(model), "weights": weights_sha, "opset": OPSET,
                      "onnx": _version("onnx"), "onnxruntime": onnxruntime.__version__,
                      "torch": torch.__version__}, sort_keys=True)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(model.spec.name))[:40]
    return cache_root() / "onnx" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.onnx"


def _entry(net: torch.nn.Module) -> dict:
    key = _state_key(net)
    entry = _memo.get(net)
    if entry is None or key is None or entry["state"] != key:
        entry = {"state": key, "sha": None, "ort": {}, "failed": None,
                 "logged": entry["logged"] if entry else set()}
        _memo[net] = entry
    return entry


def _why_not(model: Any, device: torch.device, precision: str) -> str | None:
    """Why ``auto`` cannot use ONNX Runtime for this run (None: it can)."""
    from ..model.attention_unet import AttentionUNet

    if device.type != "cpu":
        return f"the device is {device.type} (ONNX Runtime runs on the CPU here)"
    if precision not in ("fp32", "auto"):  # auto: fp32 with ONNX Runtime, bf16 with torch
        return f"the precision is {precision} (ONNX Runtime runs fp32)"
    net = model.network
    if not isinstance(net, AttentionUNet):
        return f"the network is a {type(net).__name__}, not an exportable AttentionUNet"
    if net.training:
        return "the network is in training mode"
    return onnx_available()


def _log_fallback(entry: dict, reason: str, warn: bool = False) -> None:
    if reason in entry["logged"]:
        return
    entry["logged"].add(reason)
    (logger.warning if warn else logger.info)("running the network with PyTorch: %s", reason)


def is_ready(model: Any, config: Any) -> bool:
    """True when :func:`network_for` would not export (or open an export) now."""
    from .device import select_device

    backend = getattr(config, "backend", DEFAULT_BACKEND)
    if backend == "torch" or type(model.network).__name__ == "OrtNetwork":
        return True
    with _lock:
        if backend == "auto" and _why_not(model, select_device(config.device),
                                          config.precision) is not None:
            return True
        entry = _entry(model.network)
        return entry["failed"] is not None or torch.get_num_threads() in entry["ort"]


def network_for(model: Any, device: torch.device, config: Any) -> tuple[Any, str]:
    """(network to run, ``"torch"`` or ``"onnxruntime"``) for ``model`` under ``config``."""
    net = model.network
    if type(net).__name__ == "OrtNetwork":  # an .onnx file, or a model converted already
        return net, "onnxruntime"
    backend = check_backend(getattr(config, "backend", DEFAULT_BACKEND))
    if backend == "torch":
        return net, "torch"
    with _lock:
        entry = _entry(net)
        reason = _why_not(model, device, config.precision)
        if reason is not None:
            if backend == "onnxruntime":
                from ..errors import ModelError

                raise ModelError(f"cannot run with ONNX Runtime: {reason}")
            _log_fallback(entry, reason)
            return net, "torch"
        if entry["failed"] is not None and backend == "auto":
            return net, "torch"
        try:
            return ort_network(model, entry=entry), "onnxruntime"
        except Exception as exc:
            if backend == "onnxruntime":
                raise
            entry["failed"] = f"the ONNX export failed ({type(exc).__name__}: {exc})"
            _log_fallback(entry, entry["failed"], warn=True)
            return net, "torch"


def ort_network(model: Any, threads: int | None = None, entry: dict | None = None) -> Any:
    """The ONNX Runtime network of ``model`` with ``threads`` intra-op threads (default: the
    current ``torch.get_num_threads()``): exported into the cache, or opened from it, on the
    first call for this network and thread count."""
    from .onnx_backend import OrtNetwork, open_checked_session

    threads = int(threads or torch.get_num_threads())
    with _lock:
        entry = entry if entry is not None else _entry(model.network)
        if threads in entry["ort"]:
            return entry["ort"][threads]
        if entry["sha"] is None:
            entry["sha"] = state_sha256(model.network)
        session = open_checked_session(model, cache_file(model, entry["sha"]), threads)
        entry["ort"][threads] = OrtNetwork(session, model.network.config)
        return entry["ort"][threads]
