"""Where results may be written, checked before any work is done: never over an input (or an
input's sidecar), never twice in one run, only into an existing writable folder.

:func:`check_outputs` compares resolved paths and, for files that exist, ``os.path.samefile``
(so a symlink or a hard link to an input is refused too). It also finishes interrupted writes
and removes stale temporary files in the output folders (:func:`.atomic.recover_folder`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import WriteError

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _protected(inputs: Iterable[str | Path | None]) -> list[tuple[Path, Path]]:
    """(path, the input it belongs to) for every input and, for files, its sidecar."""
    from .writers import sidecar_path

    out: list[tuple[Path, Path]] = []
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        p = Path(inp)
        out.append((p, p))
        if p.suffix.lower() in (".gz", ".nii", ".nrrd", ".nhdr", ".png", ".tif", ".tiff"):
            side = sidecar_path(p)
            if side.exists():
                out.append((side, p))
    return out


def check_outputs(outputs: Sequence[tuple[str, str | Path | None]],
                  inputs: Iterable[str | Path | None], *, sidecars: Sequence[str] = ()
                  ) -> list[Path]:
    """Check every output before the work starts; returns the output paths (None skipped).

    ``outputs``: (option name, path) pairs, e.g. ``[("-o", out), ("--probabilities", p)]``;
    ``sidecars``: the option names whose files get a ``.json`` sidecar (NIfTI outputs, which
    must end in .nii / .nii.gz). WriteError (naming the file) when an output is an input or an
    input's sidecar, two outputs collide, the name is a folder, or the folder is missing or
    not writable."""
    from .atomic import recover_folder
    from .writers import sidecar_path

    protected = _protected(inputs)
    written: list[tuple[Path, str]] = []
    result: list[Path] = []
    for option, raw in outputs:
        if raw is None or str(raw) == "":
            continue
        p = Path(raw)
        targets = [p]
        if option in sidecars:
            if not p.name.lower().endswith(NIFTI_SUFFIXES):
                raise WriteError(p, f"{option} must name a .nii or .nii.gz file")
            targets.append(sidecar_path(p))
        if p.is_dir():
            raise WriteError(p, f"{option} names a folder; give a file name")
        if p.exists() and not stat.S_ISREG(os.stat(p).st_mode):
            raise WriteError(p, f"{option} names something that is not a regular file")
        folder = p.parent if str(p.parent) else Path(".")
        if not folder.is_dir():
            raise WriteError(p, f"{option}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise WriteError(p, f"{option}: the folder {folder} is not writable")
        for t in targets:
            for prot, owner in protected:
                if _same(t, prot):
                    what = "the input" if prot == owner else f"the sidecar of the input {owner}"
                    raise WriteError(p, f"{option} would overwrite {what} {prot}; choose "
                                        "another output name")
            for other, other_opt in written:
                if _same(t, other):
                    raise WriteError(p, f"{option} and {other_opt} would both write {t}; give "
                                        "each output its own name")
            written.append((t, option))
        recover_folder(folder)
        result.append(p)
    return result
