"""Series descriptions shown by the load widget before reading (cheap: headers only)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeriesInfo:
    """One readable series in a file or folder.

    ``uid`` is the DICOM SeriesInstanceUID (the file name for NIfTI/NRRD/images); ``shape`` and
    ``spacing`` are in array order ((z, y, x) or (y, x)); ``files`` the files it is read from.
    """

    uid: str
    modality: str
    description: str
    n_slices: int
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    files: tuple[str, ...]

    def label(self) -> str:
        """One line for a picker: description, modality, size."""
        size = "x".join(str(s) for s in self.shape)
        sp = "x".join(f"{s:.3g}" for s in self.spacing)
        desc = self.description or self.uid
        return f"{desc} [{self.modality or '?'}] {size} @ {sp} mm ({self.n_slices} slices)"
