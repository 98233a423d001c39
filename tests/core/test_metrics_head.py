"""Head circumference: rasterised ellipses of known semi-axes against Ramanujan's perimeter (and a
numerically integrated one for non-square pixels), "no head found" instead of a crash or 0 mm,
stacks slice by slice, HC18's CSV, and one real HC18 mask against the sonographer's value."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from napari_attnseg.errors import GeometryError, ReadError
from napari_attnseg.metrics import (
    NO_HEAD, fit_head, measure_head, measure_heads, read_hc_reference, summarise_heads,
)
from napari_attnseg.volume import Volume

HC18 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "hc18"


def _ellipse(shape, yc, xc, a, b, theta_deg):
    """Pixels whose centres lie inside the ellipse (independent of the code under test)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    t = math.radians(theta_deg)
    dx, dy = xx - xc, yy - yc
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    return ((u / a) ** 2 + (v / b) ** 2 <= 1.0).astype(np.uint8)


def _ramanujan(a, b):
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


def _perimeter_numeric(a, b, theta_deg, sy, sx):
    """Perimeter in mm of the pixel ellipse (a, b, theta) drawn on pixels of sy × sx mm."""
    t = np.linspace(0, 2 * np.pi, 200001)
    th = math.radians(theta_deg)
    x = a * np.cos(t) * math.cos(th) - b * np.sin(t) * math.sin(th)
    y = a * np.cos(t) * math.sin(th) + b * np.sin(t) * math.cos(th)
    return float(np.sum(np.hypot(np.diff(x) * sx, np.diff(y) * sy)))


@pytest.mark.parametrize("a,b,theta,px", [(120, 70, 30, 0.1), (90, 85, -50, 0.25),
                                          (60, 40, 90, 0.07)])
def test_rasterised_ellipse_matches_ramanujan(a, b, theta, px):
    m = _ellipse((300, 400), 150.3, 201.6, a, b, theta)
    fit = fit_head(m, px)
    assert fit.found and fit.note == ""
    assert fit.hc_mm == pytest.approx(_ramanujan(a, b) * px, rel=0.01)
    assert fit.semi_axes_mm == pytest.approx((a * px, b * px), rel=0.01)
    assert fit.centre_mm == pytest.approx((150.3 * px, 201.6 * px), abs=0.5 * px)
    if abs(a - b) > 10:  # the angle of a near-circle is meaningless
        diff = (fit.angle_deg - theta + 90) % 180 - 90
        assert abs(diff) < 1.0


def test_non_square_pixels_against_a_numeric_perimeter():
    m = _ellipse((300, 400), 150, 200, 120, 70, 30)
    sy, sx = 0.2, 0.1
    fit = fit_head(m, (sy, sx))
    assert fit.hc_mm == pytest.approx(_perimeter_numeric(120, 70, 30, sy, sx), rel=0.01)
    # the axes in mm: the extreme distances from the centre over the ellipse's outline in mm
    t = np.linspace(0, 2 * np.pi, 20001)
    th = math.radians(30)
    x = (120 * np.cos(t) * math.cos(th) - 70 * np.sin(t) * math.sin(th)) * sx
    y = (120 * np.cos(t) * math.sin(th) + 70 * np.sin(t) * math.cos(th)) * sy
    r = np.hypot(x, y)
    assert fit.semi_axes_mm == pytest.approx((r.max(), r.min()), rel=0.01)
    k = int(np.argmax(r))
    expect = math.degrees(math.atan2(y[k], x[k]))
    assert abs((fit.angle_deg - expect + 90) % 180 - 90) < 1.0


def test_measure_head_differences_reference_and_no_head():
    truth = _ellipse((200, 200), 100, 100, 80, 60, 0)
    pred = _ellipse((200, 200), 100, 100, 84, 60, 0)
    m = measure_head(pred, truth, 0.1, reference_mm=45.0)
    hp, ht = _ramanujan(84, 60) * 0.1, _ramanujan(80, 60) * 0.1
    assert m.pred.hc_mm == pytest.approx(hp, rel=0.01)
    assert m.hc_diff_mm == pytest.approx(m.pred.hc_mm - m.truth.hc_mm)
    assert m.hc_diff_mm == pytest.approx(hp - ht, abs=0.3)
    assert m.hc_abs_diff_mm == pytest.approx(abs(m.hc_diff_mm))
    assert m.ref_diff_mm == pytest.approx(m.pred.hc_mm - 45.0)
    row = m.as_row()
    assert set(row) == {"hc_pred_mm", "hc_gt_mm", "hc_diff_mm", "hc_abs_diff_mm", "hc_ref_mm",
                        "hc_ref_diff_mm"}
    # no head in the prediction: NaN and a note, never 0 mm, never a crash
    empty = measure_head(np.zeros_like(truth), truth, 0.1)
    assert not empty.pred.found and math.isnan(empty.pred.hc_mm)
    assert math.isnan(empty.hc_diff_mm) and empty.truth.found
    assert empty.note == f"{NO_HEAD} in the prediction"
    assert empty.as_row()["hc_note"] == f"{NO_HEAD} in the prediction"
    tiny = np.zeros((20, 20), np.uint8)
    tiny[5, 5:7] = 1  # too few outline points for an ellipse
    assert fit_head(tiny, 1.0).note.startswith(NO_HEAD)
    # another label is not the head
    assert not measure_head(truth * 2, None, 0.1, label=1).pred.found


def test_spacing_from_the_volume_and_refused_when_assumed():
    truth = _ellipse((200, 200), 100, 100, 80, 60, 20)
    vol = Volume(truth, (0.3, 0.3), is_labels=True)
    assert measure_head(vol).pred.hc_mm == pytest.approx(_ramanujan(80, 60) * 0.3, rel=0.01)
    assumed = Volume(truth, (1.0, 1.0), is_labels=True, source="x_mask.png",
                     header={"format": "image", "pixel_size_source": "assumed"})
    with pytest.raises(GeometryError, match="not mm"):
        measure_head(assumed)
    assert measure_head(assumed, spacing=0.2).pred.hc_mm == pytest.approx(
        _ramanujan(80, 60) * 0.2, rel=0.01)
    with pytest.raises(GeometryError, match="pixel size"):
        measure_head(truth)  # a bare array and no spacing
    with pytest.raises(GeometryError, match="shape"):
        measure_head(truth, truth[:10], 0.1)


def test_stack_slice_by_slice_and_summary():
    stack = np.zeros((4, 200, 200), np.uint8)
    stack[1] = _ellipse((200, 200), 100, 100, 80, 60, 0)
    stack[3] = _ellipse((200, 200), 100, 100, 50, 40, 0)
    pred = stack.copy()
    pred[3] = 0
    ms = measure_heads(Volume(pred, (5.0, 0.1, 0.1), is_labels=True), stack)
    assert [m.slice_index for m in ms] == [1, 3]
    assert ms[0].truth.hc_mm == pytest.approx(_ramanujan(80, 60) * 0.1, rel=0.01)
    assert ms[0].hc_abs_diff_mm == pytest.approx(0.0)
    assert not ms[1].pred.found
    s = summarise_heads(ms)
    assert s["n"] == 2 and s["no_head_pred"] == 1 and s["mean_abs_diff_mm"] == pytest.approx(0)


def test_read_hc_reference_both_spellings(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text("filename,pixel size(mm),head circumference (mm)\n000_HC.png,0.0691,44.30\n")
    b = tmp_path / "b.csv"
    b.write_text("filename,pixel_size_mm,head_circumference_mm\n001_HC.png,0.0897,56.81\n")
    ra, rb = read_hc_reference(a)["000_HC.png"], read_hc_reference(b)["001_HC.png"]
    assert (ra.hc_mm, ra.pixel_size_mm) == (44.30, 0.0691)
    assert (rb.hc_mm, rb.pixel_size_mm) == (56.81, 0.0897)
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,pixel_size_mm\n000_HC.png,0.07\n")
    with pytest.raises(ReadError, match="bad.csv.*head circumference"):
        read_hc_reference(bad)
    with pytest.raises(ReadError, match="cannot read"):
        read_hc_reference(tmp_path / "missing.csv")


@pytest.mark.skipif(not HC18.is_dir(), reason=f"{HC18} is absent (real HC18 data)")
def test_real_hc18_mask_against_the_sonographer():
    import csv

    from napari_attnseg.io import read_volume

    with open(HC18 / "pixel_size_and_hc.csv", newline="") as fh:
        ref = {r["filename"]: r for r in csv.DictReader(fh)}
    for name in ("000_HC.png", "001_HC.png", "010_HC.png"):
        vol = read_volume(HC18 / "masks" / name.replace(".png", "_mask.png"))
        assert vol.spacing[0] == pytest.approx(float(ref[name]["pixel_size_mm"]))
        m = measure_head(vol, reference_mm=float(ref[name]["head_circumference_mm"]))
        assert abs(m.ref_diff_mm) < 3.0, (name, m.pred.hc_mm)
