"""Head circumference (HC18's measure): the ellipse fitted to a head mask and its perimeter in mm,
for a prediction and its ground truth, and the error against a reference value (the
sonographer's, as in HC18's ``pixel_size_and_hc.csv``).

* :func:`fit_head` -- one 2D mask -> :class:`HeadFit` (HC in mm, the ellipse in mm and pixels),
  or a "no head found" fit (never a crash, never 0 mm);
* :func:`measure_head` -- a 2D prediction (+ truth, + reference) -> :class:`HeadMeasurement`;
* :func:`measure_heads` -- the same for every 2D slice of a stack where the label is present;
* :func:`summarise_heads` -- mean / median |HC error| over several measurements;
* :func:`read_hc_reference` -- HC18's CSV (``filename, pixel size(mm), head circumference (mm)``,
  or the ``pixel_size_mm`` / ``head_circumference_mm`` spelling) as ``{file name: row}``.

The fit itself lives in :mod:`napari_attnseg.inference.postprocess` (largest component, holes
filled, least-squares ellipse through the outline, Ramanujan's perimeter).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GeometryError, ReadError

__all__ = ["HC_DEFINITIONS", "NO_HEAD", "HcReference", "HeadFit", "HeadMeasurement", "fit_head",
           "measure_head", "measure_heads", "read_hc_reference", "summarise_heads"]

NO_HEAD = "no head found"

HC_DEFINITIONS: dict[str, str] = {
    "hc_pred_mm": "Head circumference of the prediction (mm): the label's largest face-connected "
                  "component, holes filled, a least-squares ellipse fitted to its outline "
                  "(scikit-image EllipseModel), perimeter of that ellipse in mm (Ramanujan's "
                  "second approximation on the semi-axes in mm). 'nan' with the note 'no head "
                  "found' when the label is absent or the fit fails (fewer than 6 outline "
                  "pixels).",
    "hc_gt_mm": "Head circumference of the ground truth (mm), measured the same way.",
    "hc_diff_mm": "hc_pred_mm − hc_gt_mm (signed, mm).",
    "hc_abs_diff_mm": "|hc_pred_mm − hc_gt_mm| (mm).",
    "hc_ref_mm": "Reference head circumference (mm), e.g. the sonographer's value in HC18's CSV.",
    "hc_ref_diff_mm": "hc_pred_mm − hc_ref_mm (signed, mm); the HC18 challenge scores its "
                      "absolute value.",
}


@dataclass(frozen=True)
class HeadFit:
    """The ellipse fitted to one 2D head mask. When ``found`` is False every number is NaN and
    ``note`` says why ("no head found: ...")."""

    found: bool
    hc_mm: float
    semi_axes_mm: tuple[float, float]  #: (major, minor)
    centre_mm: tuple[float, float]  #: (y, x): pixel index × pixel size, from pixel (0, 0)'s centre
    angle_deg: float  #: the major axis from the image's +x axis (towards +y), in mm space, (-90, 90]
    ellipse_px: Any = None  #: the :class:`~napari_attnseg.inference.postprocess.Ellipse` in pixels
    note: str = ""

    def polygon_px(self, n: int = 64) -> np.ndarray:
        """``(n, 2)`` outline vertices in pixel (y, x) coordinates (empty when not found)."""
        e = self.ellipse_px
        if e is None:
            return np.zeros((0, 2))
        t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        c, s = math.cos(e.theta), math.sin(e.theta)
        x = e.xc + e.a * np.cos(t) * c - e.b * np.sin(t) * s
        y = e.yc + e.a * np.cos(t) * s + e.b * np.sin(t) * c
        return np.stack([y, x], axis=1)


@dataclass(frozen=True)
class HeadMeasurement:
    """HC of a prediction (and of its truth, and a reference value, when given) for one 2D
    image or slice. Differences are NaN when either side is missing."""

    label: int
    pred: HeadFit
    truth: HeadFit | None = None
    reference_mm: float | None = None
    slice_index: int | None = None  #: None for a 2D image
    hc_diff_mm: float = math.nan  #: pred − truth
    hc_abs_diff_mm: float = math.nan
    ref_diff_mm: float = math.nan  #: pred − reference
    ref_abs_diff_mm: float = math.nan

    @property
    def note(self) -> str:
        parts = [f"{NO_HEAD} in the {who}" for who, fit in (("prediction", self.pred),
                                                             ("ground truth", self.truth))
                 if fit is not None and not fit.found]
        return "; ".join(parts)

    def as_row(self) -> dict[str, Any]:
        """Flat columns for a metrics report (``hc_*``)."""
        row: dict[str, Any] = {"hc_pred_mm": self.pred.hc_mm}
        if self.truth is not None:
            row.update(hc_gt_mm=self.truth.hc_mm, hc_diff_mm=self.hc_diff_mm,
                       hc_abs_diff_mm=self.hc_abs_diff_mm)
        if self.reference_mm is not None:
            row.update(hc_ref_mm=self.reference_mm, hc_ref_diff_mm=self.ref_diff_mm)
        if self.note:
            row["hc_note"] = self.note
        return row

    def as_dict(self) -> dict[str, Any]:
        """Everything, ellipses in mm included (JSON)."""
        out: dict[str, Any] = {"label": self.label}
        if self.slice_index is not None:
            out["slice"] = self.slice_index
        out.update(self.as_row())
        for who, fit in (("pred", self.pred), ("gt", self.truth)):
            if fit is not None and fit.found:
                out[f"ellipse_{who}_mm"] = {"semi_axes": list(fit.semi_axes_mm),
                                            "centre_yx": list(fit.centre_mm),
                                            "angle_deg": fit.angle_deg}
        return out


def _spacing2d(spacing: Any) -> tuple[float, float]:
    if spacing is None:
        raise GeometryError("head circumference needs the pixel size in mm (a value in pixels "
                            "is not mm)")
    sp = (float(spacing),) * 2 if np.isscalar(spacing) else tuple(float(v) for v in spacing)[-2:]
    if len(sp) != 2 or not all(math.isfinite(v) and v > 0 for v in sp):
        raise GeometryError(f"head circumference needs a positive pixel size in mm, got "
                            f"{spacing!r}")
    return sp  # type: ignore[return-value]


def _no_head(note: str) -> HeadFit:
    nan = math.nan
    return HeadFit(False, nan, (nan, nan), (nan, nan), nan, None, f"{NO_HEAD}: {note}")


def fit_head(mask: np.ndarray, spacing: Any) -> HeadFit:
    """The head's ellipse of a 2D boolean mask with pixel size ``spacing`` (mm; one value or
    (y, x)). The ellipse in pixels is mapped to mm (an ellipse again for any pixel size): its
    semi-axes are the singular values of diag(sx, sy)·A, with A the pixel ellipse's axes."""
    from ..inference.postprocess import ellipse_circumference, fill_holes, fit_ellipse, \
        largest_component

    sy, sx = _spacing2d(spacing)
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"fit_head takes a 2D mask, got shape {mask.shape}")
    if not mask.any():
        return _no_head("the label is absent")
    ell = fit_ellipse(fill_holes(largest_component(mask)))
    if ell is None:
        return _no_head("no ellipse fits the mask (too small or degenerate)")
    c, s = math.cos(ell.theta), math.sin(ell.theta)
    axes_px = np.array([[ell.a * c, -ell.b * s], [ell.a * s, ell.b * c]])  # (x, y) rows
    u, sv, _ = np.linalg.svd(np.diag([sx, sy]) @ axes_px)
    major, minor = float(sv[0]), float(sv[1])
    angle = math.degrees(math.atan2(u[1, 0], u[0, 0]))
    if angle <= -90.0:
        angle += 180.0
    elif angle > 90.0:
        angle -= 180.0
    return HeadFit(True, ellipse_circumference(major, minor), (major, minor),
                   (ell.yc * sy, ell.xc * sx), angle, ell)


def _diff(a: float, b: float | None) -> tuple[float, float]:
    if b is None or not (math.isfinite(a) and math.isfinite(b)):
        return math.nan, math.nan
    return a - b, abs(a - b)


def _unwrap(data: Any, spacing: Any) -> tuple[np.ndarray, Any]:
    """(array, spacing): a Volume gives its own spacing, refused when its pixel size was
    assumed (a 2D image with none)."""
    if hasattr(data, "spacing") and hasattr(data, "data"):
        header = getattr(data, "header", None) or {}
        if spacing is None:
            if header.get("pixel_size_source") == "assumed":
                raise GeometryError(
                    f"{data.source or 'the image'} has no pixel size (1 mm was assumed): head "
                    "circumference in pixels is not mm; give the pixel size (--spacing, a "
                    "pixel-size CSV)")
            spacing = data.spacing
        return np.asarray(data.data), spacing
    return np.asarray(data), spacing


def _unwrap_pair(pred: Any, truth: Any, spacing: Any) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """Prediction and (optional) truth as arrays of one shape, and their spacing."""
    p, spacing = _unwrap(pred, spacing)
    t = None
    if truth is not None:
        t, spacing = _unwrap(truth, spacing)
        if t.shape != p.shape:
            raise GeometryError(f"prediction {p.shape} and ground truth {t.shape} differ in "
                                "shape")
    return p, t, spacing


def measure_head(pred: Any, truth: Any = None, spacing: Any = None, label: int = 1,
                 reference_mm: float | None = None,
                 slice_index: int | None = None) -> HeadMeasurement:
    """HC of ``label`` in a 2D label map ``pred`` (array or Volume), and in ``truth`` when
    given, with the differences; ``reference_mm`` adds the error against that value."""
    p, t, spacing = _unwrap_pair(pred, truth, spacing)
    fp = fit_head(p == label, spacing)
    ft = fit_head(t == label, spacing) if t is not None else None
    d, ad = _diff(fp.hc_mm, ft.hc_mm if ft is not None else None)
    ref = None if reference_mm is None else float(reference_mm)
    rd, rad = _diff(fp.hc_mm, ref)
    return HeadMeasurement(int(label), fp, ft, ref, slice_index, d, ad, rd, rad)


def measure_heads(pred: Any, truth: Any = None, spacing: Any = None, label: int = 1,
                  reference_mm: float | None = None,
                  slice_axis: int = 0) -> tuple[HeadMeasurement, ...]:
    """:func:`measure_head` of a 2D image (one measurement), or of every 2D slice of a
    (z, y, x) stack along ``slice_axis`` where ``label`` is in the prediction or the truth."""
    p, t, spacing = _unwrap_pair(pred, truth, spacing)
    if spacing is None:
        _spacing2d(None)
    if p.ndim == 2:
        return (measure_head(p, t, spacing, label, reference_mm),)
    if p.ndim != 3:
        raise ValueError(f"head circumference needs a 2D image or a 3D stack, got {p.shape}")
    sp = tuple(float(v) for v in spacing) if not np.isscalar(spacing) else (float(spacing),) * 3
    sp2 = tuple(v for i, v in enumerate(sp) if i != slice_axis)
    out = []
    for z in range(p.shape[slice_axis]):
        ps = np.take(p, z, axis=slice_axis)
        ts = None if t is None else np.take(t, z, axis=slice_axis)
        if (ps == label).any() or (ts is not None and (ts == label).any()):
            out.append(measure_head(ps, ts, sp2, label, reference_mm, slice_index=z))
    return tuple(out)


def summarise_heads(measurements: Iterable[HeadMeasurement]) -> dict[str, Any]:
    """Counts and mean / median |HC error| (pred vs truth, pred vs reference) in mm; failed fits
    are counted, not averaged."""
    ms = list(measurements)
    out: dict[str, Any] = {"n": len(ms), "no_head_pred": sum(not m.pred.found for m in ms),
                           "no_head_gt": sum(m.truth is not None and not m.truth.found
                                             for m in ms)}
    for key, attr in (("abs_diff_mm", "hc_abs_diff_mm"), ("ref_abs_diff_mm", "ref_abs_diff_mm")):
        vals = np.array([getattr(m, attr) for m in ms], dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[f"mean_{key}"] = float(vals.mean())
            out[f"median_{key}"] = float(np.median(vals))
    return out


@dataclass(frozen=True)
class HcReference:
    """One row of a reference-HC CSV."""

    filename: str
    hc_mm: float
    pixel_size_mm: float | None
    csv_path: Path


def _column(cols: Sequence[str], *needles: str) -> str | None:
    for c in cols:
        low = c.strip().lower().replace("_", " ")
        if all(n in low for n in needles):
            return c
    return None


def read_hc_reference(path: str | Path) -> dict[str, HcReference]:
    """``{file name: HcReference}`` of HC18's CSV (``filename``, ``pixel size(mm)``, ``head
    circumference (mm)``; ``pixel_size_mm`` / ``head_circumference_mm`` also work). ReadError
    naming the file for anything else."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = list(reader.fieldnames or [])
            name_col = next((c for c in cols if c.strip().lower() in
                             ("filename", "file", "image", "name")), None)
            hc_col = _column(cols, "circumference") or next(
                (c for c in cols if c.strip().lower() in ("hc", "hc_mm", "hc (mm)")), None)
            size_col = _column(cols, "pixel", "size")
            if name_col is None or hc_col is None:
                raise ReadError(path, f"not a head-circumference CSV: it needs a filename and a "
                                      f"head circumference column (it has {cols})")
            out: dict[str, HcReference] = {}
            for i, row in enumerate(reader, start=2):
                name = str(row.get(name_col) or "").strip()
                if not name:
                    continue
                try:
                    hc = float(row[hc_col])
                    size = float(row[size_col]) if size_col and row.get(size_col) else None
                except (TypeError, ValueError):
                    raise ReadError(path, f"line {i}: '{row.get(hc_col)}' / "
                                          f"'{row.get(size_col)}' is not a number") from None
                if not math.isfinite(hc) or hc <= 0 or (size is not None and not
                                                         (math.isfinite(size) and size > 0)):
                    raise ReadError(path, f"line {i}: the head circumference and pixel size "
                                          "must be positive millimetres")
                out[name] = HcReference(name, hc, size, path)
    except OSError as exc:
        raise ReadError(path, f"cannot read the reference CSV ({exc})") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ReadError(path, f"not a readable CSV ({exc})") from exc
    if not out:
        raise ReadError(path, "the reference CSV has no rows")
    return out
