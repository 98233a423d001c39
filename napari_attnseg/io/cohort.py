"""Every scan in a folder, for ``attnseg predict IN_DIR -o OUT_DIR``.

:func:`find_cases` lists one :class:`Case` per scan, sorted by name:

* scan files (NIfTI, NRRD, MetaImage, 2D images) in the folder and, mirrored by name, in its
  subfolders (a subfolder without DICOM is searched like the folder, up to ``max_depth``);
* DICOM series, found explicitly: a folder that holds DICOM files is one DICOM folder (read
  recursively); each of its image series is a case named after the folder (``<folder>`` for one
  series, ``<folder>_series<k>`` for several, most slices first);
* segmentations (``*.seg.nrrd``, DICOM-SEG), sidecars and hidden files are not scans.

:func:`shard` takes part ``part_id`` of ``num_parts`` as nnU-Net does (``cases[part_id::num_parts]``
of the sorted list), so a SLURM array job ``--part-id $SLURM_ARRAY_TASK_ID --num-parts N``
segments each case exactly once.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import ReadError

log = logging.getLogger(__name__)

#: file suffixes of single-file scans (longest first), and their kind
SCAN_SUFFIXES = ((".nii.gz", "NIfTI"), (".nii", "NIfTI"), (".nrrd", "NRRD"), (".nhdr", "NRRD"),
                 (".mha", "MetaImage"), (".mhd", "MetaImage"), (".png", "2D image"),
                 (".jpg", "2D image"), (".jpeg", "2D image"), (".tif", "2D image"),
                 (".tiff", "2D image"))
DICOM_KIND = "DICOM series"


@dataclass(frozen=True)
class Case:
    """One scan to segment: ``name`` is the output name (relative, '/'-separated, no suffix)."""

    name: str
    path: Path
    kind: str
    series_uid: str | None = None
    n_slices: int | None = None
    description: str = ""

    def describe(self) -> str:
        if self.kind == DICOM_KIND:
            desc = f", {self.description}" if self.description else ""
            return (f"DICOM series in {self.path.name}/ ({self.n_slices} slices{desc}, "
                    f"uid {self.series_uid})")
        return f"{self.kind} {self.path.name}"


def scan_kind(path: Path) -> tuple[str, str] | None:
    """(stem, kind) for a single-file scan name; None for anything else."""
    low = path.name.lower()
    if path.name.startswith(".") or low.endswith(".seg.nrrd"):
        return None
    for suffix, kind in SCAN_SUFFIXES:
        if low.endswith(suffix):
            return path.name[: -len(suffix)], kind
    return None


def _holds_dicom_files(folder: Path) -> bool:
    from .dicom import DICOM_SUFFIXES, has_dicom_magic

    for f in sorted(folder.iterdir())[:200]:
        if f.is_file() and not f.name.startswith(".") and (
                f.suffix.lower() in DICOM_SUFFIXES or has_dicom_magic(f)):
            return True
    return False


def _dicom_cases(folder: Path, name: str) -> list[Case]:
    from .dicom import list_dicom_series

    try:
        series = list_dicom_series(folder)
    except ReadError as exc:  # e.g. only a SEG or a structured report: not a scan
        log.warning("skipping %s: %s", folder, exc.problem)
        return []
    out = []
    for k, s in enumerate(series, start=1):
        out.append(Case(name if len(series) == 1 else f"{name}_series{k}", folder, DICOM_KIND,
                        s.uid, s.n_slices, s.description))
    return out


def _walk(folder: Path, prefix: str, depth: int, max_depth: int) -> list[Case]:
    if _holds_dicom_files(folder):
        return _dicom_cases(folder, prefix.rstrip("/") or folder.name)
    cases = []
    from .dicom_seg import is_dicom_seg

    for f in sorted(folder.iterdir()):
        if f.is_file():
            sk = scan_kind(f)
            if sk is not None:
                cases.append(Case(prefix + sk[0], f, sk[1]))
        elif f.is_dir() and not f.name.startswith(".") and depth < max_depth:
            cases.extend(_walk(f, f"{prefix}{f.name}/", depth + 1, max_depth))
    return [c for c in cases if not (c.path.suffix.lower() == ".dcm" and is_dicom_seg(c.path))]


def find_cases(folder: str | Path, *, max_depth: int = 3) -> list[Case]:
    """Every scan under ``folder`` (see the module doc), sorted by name. ReadError when the
    folder is missing; two scans that would give the same output name are an error too."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReadError(folder, "is not a folder")
    cases = sorted(_walk(folder, "", 0, max_depth), key=lambda c: c.name)
    dup = [n for n, k in Counter(c.name for c in cases).items() if k > 1]
    if dup:
        clash = "; ".join(", ".join(str(c.path.name) for c in cases if c.name == n) for n in dup)
        raise ReadError(folder, f"several scans would give the same output name ({clash}); "
                                "rename or move one")
    return cases


def shard(cases: list[Case], part_id: int, num_parts: int) -> list[Case]:
    """Part ``part_id`` (0-based) of ``num_parts``: ``cases[part_id::num_parts]``."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ValueError(f"--part-id must be in 0..{num_parts - 1} for --num-parts {num_parts}, "
                         f"got {part_id}")
    return cases[part_id::num_parts]


def summary(cases: list[Case]) -> str:
    """``"3 scans: 2 NIfTI, 1 DICOM series"``."""
    kinds = Counter(c.kind for c in cases)
    parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return f"{len(cases)} scan{'s' if len(cases) != 1 else ''}: {parts}" if cases else "no scans"
