"""Models out of PyTorch: ONNX (run by ONNX Runtime) and TorchScript.

* :func:`export_onnx` writes the network as ONNX (opset 17, dynamic batch and spatial axes,
  batch-norm folded as in the fused PyTorch path) with the model's ``config.json`` content in the
  file's metadata (``attnseg_spec``, ``attnseg_model_id``, ``attnseg_weights_sha256``), so an
  ``.onnx`` file is self-describing like a model folder. It is checked against PyTorch on a
  random input before it is kept.
* :func:`export_torchscript` writes a traced TorchScript module (``torch.jit.load`` needs no
  napari-attnseg), checked the same way at two input sizes.
* :func:`onnx_model` turns a loaded model (or an ``.onnx`` file) into a model whose ``network``
  runs in ONNX Runtime, for the unchanged :func:`~napari_attnseg.inference.predictor.predict_job`.
  Models are exported once into the user's cache (:mod:`.backend`, which also chooses the
  runtime for ``PredictConfig.backend`` / ``attnseg predict --backend auto|torch|onnxruntime``).

onnx and onnxruntime are the optional extra ``onnx``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import MissingDependencyError, ModelError

logger = logging.getLogger(__name__)

OPSET = 17
#: Largest |logit| difference accepted between PyTorch and the exported model on the check input.
EXPORT_ATOL = 1e-3


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", extra="onnx",
                                     purpose="running models with ONNX Runtime") from exc
    return onnxruntime


def _example(model: Any, batch: int = 1, scale: int = 1) -> torch.Tensor:
    cfg = model.network.config
    d = int(model.network.divisor)
    side = max(d, 64 if cfg.spatial_dims == 2 else 32) * scale
    shape = (batch, cfg.in_channels) + (side,) * cfg.spatial_dims
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _spec_json(model: Any) -> str:
    d = model.spec.to_json_dict()
    d.pop("views", None)  # one file holds one network: the model alone (the export says so)
    return json.dumps(d, default=str)


def _atomic_bytes(path: Path, payload: bytes) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def onnx_bytes(model: Any) -> bytes:
    """The network as ONNX bytes with the spec in its metadata (not yet checked)."""
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("onnx", extra="onnx", purpose="exporting to ONNX") from exc
    net = model.network.eval()
    dims = net.config.spatial_dims
    axes = {0: "batch", 2: "d0", 3: "d1"} if dims == 2 else {0: "batch", 2: "d0", 3: "d1",
                                                             4: "d2"}
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript-based exporter (dynamo=False) handles the shape checks in forward();
        # torch marks it deprecated in favour of torch.export, which does not export this model yet
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (_example(model),), buf, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": axes, "logits": axes},
                          opset_version=OPSET, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    meta = {"attnseg_spec": _spec_json(model), "attnseg_model_id": str(model.model_id),
            "attnseg_weights_sha256": str(model.weights_sha256)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "napari-attnseg"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _session(payload: bytes | str, threads: int | None = None) -> Any:
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting between runs: the sliding window's PyTorch blending runs in between, and
    # spinning ORT threads took its cores (whole scan 1.7x slower at 2 threads)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(payload, sess_options=opts, providers=["CPUExecutionProvider"])


def _check(model: Any, run: Any, what: str, sizes: tuple = ((1, 1), (2, 2))) -> float:
    """Largest |logit| difference between PyTorch and ``run`` at ``sizes`` (batch, scale)."""
    worst = 0.0
    for batch, scale in sizes:
        x = _example(model, batch, scale)
        with torch.no_grad():
            ref = model.network(x)
        ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
        got = np.asarray(run(x))
        if got.shape != ref.shape:
            raise ModelError(f"the {what} export gives shape {got.shape} for input "
                             f"{tuple(x.shape)}; PyTorch gives {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    if worst > EXPORT_ATOL:
        raise ModelError(f"the {what} export differs from PyTorch by up to {worst:.3g} in the "
                         f"logits (allowed {EXPORT_ATOL}); not written")
    return worst


def export_onnx(model: Any, path: str | Path) -> Path:
    """Write ``model`` as a checked ONNX file (atomically). Returns the path."""
    path = Path(path)
    payload = onnx_bytes(model)
    sess = _session(payload)
    diff = _check(model, lambda x: sess.run(None, {"image": x.numpy()})[0], "ONNX")
    _atomic_bytes(path, payload)
    logger.info("wrote %s (max |logit| difference to PyTorch %.2g)", path, diff)
    return path


def export_torchscript(model: Any, path: str | Path) -> Path:
    """Write ``model`` as a traced, checked TorchScript file (the spec in its extra files as
    ``attnseg_spec.json``). Returns the path."""
    path = Path(path)
    net = model.network.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the python shape checks
        traced = torch.jit.trace(net, (_example(model),), check_trace=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={"attnseg_spec.json": _spec_json(model)})
    loaded = torch.jit.load(io.BytesIO(buf.getvalue()))

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return loaded(x).numpy()

    diff = _check(model, run, "TorchScript")
    _atomic_bytes(path, buf.getvalue())
    logger.info("wrote %s (max |logit| difference to PyTorch %.2g)", path, diff)
    return path


# ---------------------------------------------------------------------- running
class OrtNetwork(torch.nn.Module):
    """A network whose forward runs an ONNX Runtime session: ``(N, C, *S)`` float32 tensor in,
    raw logits tensor out, like :class:`~napari_attnseg.model.attention_unet.AttentionUNet`
    (same ``config`` and ``divisor``), so the sliding window and predictor use it unchanged."""

    def __init__(self, session: Any, config: Any):
        super().__init__()
        self.session = session
        self.config = config
        self.input_name = session.get_inputs()[0].name

    @property
    def divisor(self) -> int:
        return int(self.config.divisor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])


def open_checked_session(model: Any, path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime session of ``model``'s network from the cache entry ``path``: opened and
    checked against PyTorch on one input when it exists (an entry that fails either is deleted,
    with a warning), else exported, checked at two input sizes and written atomically."""
    path = Path(path)
    if path.is_file():
        try:
            sess = _session(str(path), threads)
            _check(model, lambda x: sess.run(None, {"image": x.numpy()})[0], "cached ONNX",
                   sizes=((1, 1),))
            return sess
        except MissingDependencyError:
            raise
        except Exception as exc:  # a truncated, corrupt or stale file: export it again
            logger.warning("the ONNX cache entry %s is unusable (%s); exporting again", path,
                           str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            path.unlink(missing_ok=True)
    payload = onnx_bytes(model)
    sess = _session(payload, threads)
    diff = _check(model, lambda x: sess.run(None, {"image": x.numpy()})[0], "ONNX")
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_bytes(path, payload)
    logger.info("exported %s to ONNX for ONNX Runtime: %s (max |logit| difference to PyTorch "
                "%.2g)", getattr(model, "model_id", model.spec.name), path, diff)
    return sess


def onnx_model(model: Any, threads: int | None = None) -> Any:
    """``model`` (a LoadedModel) with its network run by ONNX Runtime (exported once into the
    cache, see :mod:`.backend`)."""
    from .backend import ort_network

    return dataclasses.replace(model, network=ort_network(model, threads))


def load_onnx_file(path: str | Path, threads: int | None = None) -> Any:
    """A LoadedModel-like model from an ``.onnx`` file written by :func:`export_onnx`."""
    from ..model.checkpoint import LoadedModel, ModelSpec

    path = Path(path)
    sess = _session(str(path), threads)
    meta = sess.get_modelmeta().custom_metadata_map
    if "attnseg_spec" not in meta:
        raise ModelError(f"{path} has no napari-attnseg metadata (label names, normalization); "
                         "export it with `attnseg export NAME -o model.onnx`")
    try:
        spec = ModelSpec.from_json_dict(json.loads(meta["attnseg_spec"]))
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: its napari-attnseg metadata cannot be read ({exc})") from exc
    return LoadedModel(network=OrtNetwork(sess, spec.arch), spec=spec, folder=path,
                       weights_sha256=meta.get("attnseg_weights_sha256", ""))
