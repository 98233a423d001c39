"""``attnseg predict IN -o OUT.nii.gz --model NAME|FOLDER``: segment a scan (NIfTI file, DICOM
folder, NRRD, 2D image) with a model from the registry or a model folder; the same code path as
the Segment widget. Without ``--model`` the model is chosen by the scan's modality and anatomy
with the Segment widget's rule (:mod:`napari_attnseg.model.choose`), or the command says that
no installed model fits. Writes the labels with the scan's geometry and the provenance (model id, weights
hash, parameters) in the writer's sidecar; ``--probabilities`` also writes the foreground
probability map (1 - P(background), float32; for two-class models the class-1 probability).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ._common import add_input_options, input_kwargs, positive_int
from ._spacing import add_spacing_argument, read_with_spacing

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="scan to segment: NIfTI / NRRD / MetaImage file, DICOM "
                                      "folder; or a folder of scans (with -o OUT_DIR)")
    parser.add_argument("-o", "--output", required=True,
                        help="labels output: .nii.gz / .nii, .seg.nrrd (3D Slicer), .dcm "
                             "(DICOM-SEG of a DICOM scan); or an output folder for a folder")
    parser.add_argument("--model", default=None,
                        help="model name, name@version or model folder (default: the installed "
                             "model for the scan's modality and anatomy, as the Segment widget "
                             "chooses it; none fits: an error saying so)")
    parser.add_argument("--overlap", type=float, default=0.5,
                        help="sliding-window overlap in [0, 1) (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="windows per batch (default: 1 on the CPU, 4 on a GPU)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="mirror test-time augmentation on (--tta) or off (--no-tta); "
                             "default: what the model declares (its card says why)")
    parser.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, mps")
    parser.add_argument("--precision", default="auto",
                        help="auto (default: bf16 on a CPU with native bf16, AMX or AVX512-BF16; "
                             "fp32 elsewhere), fp32, amp (float16 on CUDA) or bf16")
    parser.add_argument("--window", default="auto", choices=["auto", "slice", "patch"],
                        help="2D models: whole slice per window (slice, fastest), the training "
                             "patch with blended overlap (patch), or auto (default: slice)")
    parser.add_argument("--modality", default=None,
                        help="the scan's modality CT, MR or US (default: detected from the file); "
                             "chooses the model when --model is not given, and sets the "
                             "intensity preset")
    parser.add_argument("--probabilities", default=None, metavar="OUT_PROBS",
                        help="also write the foreground probability map here")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for PyTorch and ONNX Runtime (default: PyTorch's "
                             "choice)")
    add_input_options(parser)
    add_spacing_argument(parser)
    from ._backend import add_backend_argument

    add_backend_argument(parser)
    from ._folder import add_folder_arguments

    add_folder_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def resolve_model_folder(ref: str | None, volume=None):
    """The model folder for ``--model``, else the model :func:`~napari_attnseg.model.choose.
    choose_model` picks for ``volume``'s modality and anatomy (the Segment widget's rule);
    ModelError saying plainly why when none fits."""
    from ..errors import ModelError
    from ..model.choose import choose_model, mismatch, model_info
    from ..model.registry import ModelRegistry

    reg = ModelRegistry()
    modality = getattr(volume, "modality", "") if volume is not None else ""
    anatomy = dict(getattr(volume, "header", {}) or {}).get("anatomy", "") if volume is not None else ""
    if ref:
        folder = reg.resolve(ref)
        if volume is not None:
            problem = mismatch(model_info(folder), modality, anatomy)
            if problem:
                logger.warning("%s: %s", ref, problem)
        return folder
    choice = choose_model(modality, anatomy, registry=reg)
    if choice.info is None:
        raise ModelError(f"{choice.message}. Give a model with --model (name, name@version or "
                         "a folder)" + ("" if modality else ", or the modality with --modality"))
    logger.info("%s for a %s image", choice.message, modality + (f" ({anatomy})" if anatomy else ""))
    return choice.info.path


def run(args: argparse.Namespace) -> int:
    from ._folder import folder_mode, run_folder
    from ._pacs import run_with_pacs, uses_pacs

    if uses_pacs(args):  # a DICOMweb series URL in, or a DICOMweb server (-o URL) out
        return run_with_pacs(args, run)
    if folder_mode(args):  # IN_DIR -o OUT_DIR: every scan in the folder
        return run_folder(args)
    import torch

    from ..inference.device import device_summary, select_device
    from ..inference.predictor import PredictConfig, plan_prediction, predict_job
    from ..io.writers import write_volumes
    from ._common import check_outputs, log_read_warnings, run_with_progress

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    config = PredictConfig(overlap=args.overlap, batch_size=args.batch_size, tta=args.tta,
                           device=args.device, precision=args.precision, modality=args.modality,
                           window=args.window)
    from ..io.formats_out import special_writer

    nifti_out = special_writer(args.output) is None  # .seg.nrrd / .dcm: their own writers
    check_outputs([("-o", args.output), ("--probabilities", args.probabilities)], [args.input],
                  sidecars=("-o", "--probabilities"))  # before any work: never over an input
    volume = read_with_spacing(args.input, args.spacing, modality=args.modality or None,
                               **input_kwargs(args))
    log_read_warnings(volume, args.input)
    from ._backend import load_predict_model

    model, config = load_predict_model(args, volume, config, resolve_model_folder)
    device = select_device(config.device)
    plan = plan_prediction(model, volume, config, device=device)
    logger.info("model %s on %s; %s", model.model_id, device_summary(device), plan.message)
    if device.type == "cpu":
        logger.info("running on the CPU: slower than a GPU")
    result = run_with_progress(predict_job(model, volume, config), desc="predict",
                               quiet=args.quiet)
    labels = volume.with_data(result.labels, is_labels=True)
    unit = [(labels, args.output, None, result.provenance)]
    if args.probabilities:
        probs = volume.with_data(result.foreground_probability(), is_labels=False)
        unit.append((probs, args.probabilities, None,
                     dict(result.provenance, map="foreground probability")))
    if nifti_out:
        write_volumes(unit)  # labels, probabilities and sidecars: all new or all old
    else:
        from ..io import write_volume

        for vol, out, ref, prov in unit:
            write_volume(vol, out, reference=ref, provenance=prov)
    logger.info("wrote %s (%d windows, %.2f s on %s, %s)", args.output, result.n_windows,
                result.seconds, result.device, result.provenance.get("backend", "torch"))
    if args.probabilities:
        logger.info("wrote %s", args.probabilities)
    if args.quiet:
        return 0
    import numpy as np

    present = np.unique(result.labels).tolist()
    sys.stderr.write(f"{args.output}: labels present {present[:10]} "
                     f"({result.n_windows} windows, {result.seconds:.2f} s, {result.device})\n")
    return 0
