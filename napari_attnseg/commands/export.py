"""``attnseg export NAME -o model.onnx`` (or ``model.pt``): a registry model (name, name@version
or a model folder) out of napari-attnseg, for ONNX Runtime, TorchScript or other tools.

* ``.onnx``: opset 17, input ``image`` (N, C, *spatial) float32 after the model's intensity
  normalization, output ``logits`` (N, classes, *spatial); dynamic batch and spatial axes (sizes
  must be multiples of the network's divisor, 16 for the shipped models); the model's config
  (label names, normalization, patch size) in the file's metadata ``attnseg_spec``, so
  ``attnseg predict --model model.onnx`` runs it with the same pre/post-processing.
* ``.pt``: a traced TorchScript module (``torch.jit.load``), the config as the extra file
  ``attnseg_spec.json``.

Both exports are checked against PyTorch at two input sizes before the file is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model name, name@version or model folder")
    parser.add_argument("-o", "--output", required=True,
                        help="model.onnx (ONNX) or model.pt (TorchScript)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary line")


def run(args: argparse.Namespace) -> int:
    from ..model.checkpoint import load_model
    from ..model.registry import ModelRegistry

    out = Path(args.output)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"{out}: the file name must end in .onnx (ONNX) or .pt (TorchScript)")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise ValueError(f"{out}: folder {out.parent} does not exist")
    model = load_model(ModelRegistry().resolve(args.model), device="cpu")
    from ..inference.onnx_backend import export_onnx, export_torchscript

    written = (export_onnx if fmt == "onnx" else export_torchscript)(model, out)
    if model.views:
        sys.stderr.write(f"{written}: the {fmt} file holds {model.model_id}'s own network; its views "
                         f"({', '.join(v.spec.name for v, _, _ in model.views)}) are not in it, so it segments "
                         "as the model alone (the registry model averages them)\n")
    if not args.quiet:
        size = written.stat().st_size / 1e6
        sys.stderr.write(f"{written}: {model.model_id} as {fmt} ({size:.1f} MB), checked "
                         "against PyTorch\n")
    return 0
