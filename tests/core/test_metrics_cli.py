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
