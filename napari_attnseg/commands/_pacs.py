"""DICOMweb in ``attnseg predict``: a series URL as the input, a DICOMweb root as ``-o``.

``attnseg predict http://HOST:PORT/dicom-web/studies/S/series/X -o http://HOST:PORT/dicom-web``
retrieves the series into the local cache (:func:`napari_attnseg.io.dicomweb.local_path`),
segments it like a local DICOM folder, writes the result as a DICOM-SEG referencing the retrieved
instances and stores it on the server (STOW-RS), which then lists it beside the scan. Either end
may be local (``-o result.nii.gz`` from a URL; a local DICOM folder to ``-o URL``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..io.dicomweb import is_url

logger = logging.getLogger(__name__)


def uses_pacs(args: argparse.Namespace) -> bool:
    return is_url(getattr(args, "input", None)) or is_url(getattr(args, "output", None))


def run_with_pacs(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    """Run ``run`` on a local copy of the input and a local DICOM-SEG, then store it."""
    from ..io.dicomweb import local_path, store_file

    args = argparse.Namespace(**vars(args))
    if is_url(args.input):
        args.input = str(local_path(args.input))
    if not is_url(args.output):
        return run(args)
    if getattr(args, "probabilities", None):
        raise ValueError("--probabilities is a local file; a DICOMweb output stores the labels")
    server = args.output
    with tempfile.TemporaryDirectory(prefix="attnseg-stow-") as tmp:
        args.output = str(Path(tmp) / "result.dcm")
        rc = run(args)
        if rc != 0:
            return rc
        url = store_file(args.output, server)
    if not args.quiet:
        sys.stderr.write(f"stored the DICOM-SEG on the server: {url}\n")
    return 0
