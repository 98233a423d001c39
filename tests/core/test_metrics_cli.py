"""``attnseg evaluate`` and ``attnseg baseline`` (reading/writing through napari_attnseg.io,
replaced here by an in-memory fake so the commands are tested on their own)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import napari_attnseg.io as io_pkg
from napari_attnseg.cli import main
from napari_attnseg.metrics import evaluate
from napari_attnseg.volume import Volume


@pytest.fixture
def fake_io(monkeypatch):
    store: dict[str, Volume] = {}
    written: dict[str, tuple[Volume, dict]] = {}

    def read_volume(path):
        if str(path) not in store:
            raise FileNotFoundError(path)
        return store[str(path)]

    def write_volume(volume, path, provenance=None):
        written[str(path)] = (volume, dict(provenance or {}))
        return path

    monkeypatch.setattr(io_pkg, "read_volume", read_volume, raising=False)
    monkeypatch.setattr(io_pkg, "write_volume", write_volume, raising=False)
    return store, written


def _pair():
    gt = np.zeros((12, 16, 16), np.uint8)
    gt[3:9, 4:12, 4:12] = 1
    gt[5:7, 6:8, 6:8] = 2
    pred = np.roll(gt, 1, axis=2)
    return pred, gt


def test_evaluate_prints_table_and_writes_files(fake_io, tmp_path, capsys):
    store, _ = fake_io
    pred, gt = _pair()
    store["p"] = Volume(pred, (2.0, 0.5, 0.5), is_labels=True)
    store["g"] = Volume(gt, (2.0, 0.5, 0.5), is_labels=True)
    csv_path, json_path = tmp_path / "m.csv", tmp_path / "m.json"
    rc = main(["evaluate", "p", "g", "-q", "--tolerance-mm", "0.5", "--csv", str(csv_path),
               "--json", str(json_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("| label | dice")
    ref = evaluate(pred, gt, (2.0, 0.5, 0.5), tolerance_mm=0.5)
    js = json.loads(json_path.read_text())
    assert [r["label"] for r in js["rows"]] == [1, 2]
    assert js["rows"][0]["hd"] == pytest.approx(ref.value("hd", 1))
    assert f"{ref.value('dice', 2):.4f}" in out
    assert csv_path.read_text().startswith("label,dice")


def test_evaluate_refuses_mismatched_grids(fake_io, capsys):
    store, _ = fake_io
    pred, gt = _pair()
    store["p"] = Volume(pred, (2.0, 0.5, 0.5))
    store["g"] = Volume(gt, (2.0, 0.5, 0.6))
    store["small"] = Volume(gt[:5], (2.0, 0.5, 0.5))
    assert main(["evaluate", "p", "g", "-q"]) == 2
    assert "not on the same grid" in capsys.readouterr().err
    assert main(["evaluate", "small", "g", "-q"]) == 2
    assert "different shapes" in capsys.readouterr().err
    # an explicit spacing scores voxel by voxel
    assert main(["evaluate", "p", "g", "-q", "--spacing", "1", "1", "1"]) == 0
    assert main(["evaluate", "p", "g", "-q", "--spacing", "1", "1"]) == 2


def test_baseline_command_writes_labels_with_provenance(fake_io):
    store, written = fake_io
    img = np.zeros((10, 20, 20), np.float32)
    img[3:7, 5:15, 5:15] = 100.0
    store["img"] = Volume(img, (3.0, 1.0, 1.0), origin=(1.0, 2.0, 3.0), modality="CT")
    assert main(["baseline", "otsu", "img", "-o", "out.nii.gz", "-q"]) == 0
    vol, prov = written["out.nii.gz"]
    assert vol.is_labels and vol.data.dtype == np.uint8 and vol.data.sum() == 400
    assert vol.same_grid(store["img"]) and prov["baseline"] == "otsu"
    assert main(["baseline", "region-growing", "img", "-o", "rg.nii.gz", "--seed", "5", "10",
                 "10", "--tolerance", "1", "-q"]) == 0
    assert written["rg.nii.gz"][0].data.sum() == 400
    assert written["rg.nii.gz"][1]["seed"] == [5.0, 10.0, 10.0]
    assert main(["baseline", "region_growing", "img", "-o", "x", "-q"]) == 2
    assert main(["baseline", "chan_vese", "img", "-o", "cv.nii.gz", "--iterations", "4",
                 "-q"]) == 0
    assert main(["baseline", "snakes", "img", "-o", "x", "-q"]) == 2


def _disc(shape, yc, xc, a, b):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    return ((((xx - xc) / a) ** 2 + ((yy - yc) / b) ** 2) <= 1.0).astype(np.uint8)


def _ramanujan(a, b):
    import math

    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


def test_evaluate_hc_2d_report_json_and_reference(fake_io, tmp_path, capsys):
    store, _ = fake_io
    gt = _disc((200, 260), 100, 130, 90, 60)
    pred = _disc((200, 260), 100, 130, 95, 60)
    assumed = {"format": "image", "pixel_size_source": "assumed"}
    store["000_HC_pred.png"] = Volume(pred, (1.0, 1.0), is_labels=True, header=assumed)
    store["000_HC_mask.png"] = Volume(gt, (1.0, 1.0), is_labels=True, header=assumed)
    ref = tmp_path / "pixel_size_and_hc.csv"
    ref.write_text("filename,pixel size(mm),head circumference (mm)\n"
                   "000_HC.png,0.1,50.0\n001_HC.png,0.2,60.0\n")
    out_json = tmp_path / "m.json"
    rc = main(["evaluate", "000_HC_pred.png", "000_HC_mask.png", "-q", "--hc-reference",
               str(ref), "--json", str(out_json)])
    assert rc == 0
    captured = capsys.readouterr()
    hp, ht = _ramanujan(95, 60) * 0.1, _ramanujan(90, 60) * 0.1  # independent of the code
    js = json.loads(out_json.read_text())
    row = js["rows"][0]
    assert row["hc_pred_mm"] == pytest.approx(hp, rel=0.01)
    assert row["hc_gt_mm"] == pytest.approx(ht, rel=0.01)
    assert row["hc_diff_mm"] == pytest.approx(row["hc_pred_mm"] - row["hc_gt_mm"])
    assert row["hc_ref_mm"] == 50.0
    assert row["hc_ref_diff_mm"] == pytest.approx(row["hc_pred_mm"] - 50.0)
    assert js["spacing_mm"] == [0.1, 0.1]  # the CSV's pixel size, for every metric
    assert row["volume_gt_mm3"] == pytest.approx(gt.sum() * 0.01)
    hc = js["head_circumference"]
    assert hc["reference_row"] == "000_HC.png" and "pixel_size_and_hc.csv" in hc["pixel_size_note"]
    assert hc["measurements"][0]["ellipse_gt_mm"]["semi_axes"] == pytest.approx([9.0, 6.0],
                                                                                rel=0.01)
    assert "hc_pred_mm" in js["definitions"]
    assert "Head circumference, label 1" in captured.out
    assert f"{row['hc_pred_mm']:.2f}" in captured.out and "carries none" in captured.out
    # --hc-name picks another row (its pixel size, its reference)
    assert main(["evaluate", "000_HC_pred.png", "000_HC_mask.png", "-q", "--hc-reference",
                 str(ref), "--hc-name", "001_HC.png", "--json", str(out_json)]) == 0
    row = json.loads(out_json.read_text())["rows"][0]
    assert row["hc_pred_mm"] == pytest.approx(hp * 2, rel=0.01) and row["hc_ref_mm"] == 60.0


def test_evaluate_hc_refuses_pixels_and_missing_rows(fake_io, tmp_path, capsys):
    store, _ = fake_io
    gt = _disc((100, 100), 50, 50, 40, 30)
    assumed = {"format": "image", "pixel_size_source": "assumed"}
    store["a_mask.png"] = Volume(gt, (1.0, 1.0), is_labels=True, header=assumed)
    store["a_pred.png"] = Volume(gt, (1.0, 1.0), is_labels=True, header=assumed)
    assert main(["evaluate", "a_pred.png", "a_mask.png", "-q", "--hc"]) == 2
    assert "not mm" in capsys.readouterr().err
    ref = tmp_path / "ref.csv"
    ref.write_text("filename,head_circumference_mm\nother.png,50\n")
    assert main(["evaluate", "a_pred.png", "a_mask.png", "-q", "--hc-reference", str(ref)]) == 2
    err = capsys.readouterr().err
    assert "ref.csv" in err and "a.png" in err and "--hc-name" in err
    ref.write_text("filename,head_circumference_mm\na.png,50\n")  # a row, but no pixel size
    assert main(["evaluate", "a_pred.png", "a_mask.png", "-q", "--hc-reference", str(ref)]) == 2
    assert "not mm" in capsys.readouterr().err
    # --spacing is a pixel size: accepted
    out_json = tmp_path / "a.json"
    assert main(["evaluate", "a_pred.png", "a_mask.png", "-q", "--hc-reference", str(ref),
                 "--spacing", "0.5", "--json", str(out_json)]) == 0
    row = json.loads(out_json.read_text())["rows"][0]
    assert row["hc_pred_mm"] == pytest.approx(_ramanujan(40, 30) * 0.5, rel=0.01)


def test_evaluate_hc_stack_per_slice_and_no_head(fake_io, tmp_path, capsys):
    store, _ = fake_io
    gt = np.zeros((3, 120, 120), np.uint8)
    gt[0] = _disc((120, 120), 60, 60, 50, 40)
    gt[2] = _disc((120, 120), 60, 60, 30, 20)
    pred = gt.copy()
    pred[2] = 0
    store["p"] = Volume(pred, (4.0, 0.2, 0.2), is_labels=True)
    store["g"] = Volume(gt, (4.0, 0.2, 0.2), is_labels=True)
    out_json = tmp_path / "s.json"
    assert main(["evaluate", "p", "g", "-q", "--hc", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    js = json.loads(out_json.read_text())
    ms = js["head_circumference"]["measurements"]
    assert [m["slice"] for m in ms] == [0, 2]
    assert ms[0]["hc_gt_mm"] == pytest.approx(_ramanujan(50, 40) * 0.2, rel=0.01)
    assert ms[1]["hc_pred_mm"] == "nan" and ms[1]["hc_note"] == "no head found in the prediction"
    assert js["rows"][0]["hc_slices"] == 2 and js["rows"][0]["hc_mean_abs_diff_mm"] == 0.0
    assert "no head found in the prediction" in out and "2 slices" in out
