"""Load scan widget: series table, preset from the Modality tag, geometry summary, open."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_attnseg.widgets.load import LoadConfig, LoadWidget, read_job

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data"


@pytest.fixture
def notes(monkeypatch):
    seen = {"error": [], "warning": []}
    import napari.utils.notifications as n

    monkeypatch.setattr(n, "show_error", lambda m: seen["error"].append(str(m)))
    monkeypatch.setattr(n, "show_warning", lambda m: seen["warning"].append(str(m)))
    return seen


@pytest.fixture
def two_series(tmp_path):
    """A folder with the CT sample series plus a second, shorter MR series (new UIDs)."""
    import pydicom

    folder = tmp_path / "study"
    shutil.copytree(SAMPLE / "ct_dicom", folder / "ct")
    (folder / "mr").mkdir()
    for i, f in enumerate(sorted((SAMPLE / "ct_dicom").iterdir())[:5]):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = "1.2.3.4.5.6.7"
        ds.SOPInstanceUID = f"1.2.3.4.5.6.7.{i}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Modality = "MR"
        ds.SeriesDescription = "second series"
        ds.save_as(folder / "mr" / f"x{i}.dcm")
    return folder


def test_dicom_folder_lists_series_and_opens(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    w.preset_combo.setCurrentText("US")
    assert w.set_path(SAMPLE / "ct_dicom")
    assert w.table.rowCount() == 1
    assert w.table.item(0, 1).text() == "CT"
    assert w.table.item(0, 2).text() == "24 x 128 x 128"
    assert w.preset_combo.currentText() == "CT"  # from the Modality tag
    assert w.open_button.isEnabled()
    vol = w.open_selected(sync=True)
    assert vol is not None and notes["error"] == []
    layer = viewer.layers["ct_dicom"]
    assert layer.metadata["attnseg"]["modality"] == "CT"
    np.testing.assert_allclose(layer.metadata["attnseg"]["spacing"], (2.5, 0.8, 0.8), rtol=1e-5)
    assert float(np.asarray(layer.data).min()) <= -900  # HU (air), rescale applied
    text = w.summary_label.text()
    assert "Orientation: LPS" in text and "2.5 x 0.8 x 0.8" in text and "Anisotropy: 3.12" in text


def test_preset_choice_is_stored(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    assert w.set_path(SAMPLE / "us_cine.nii.gz")
    w.preset_combo.setCurrentText("US")  # NIfTI has no modality: the user picks
    w.open_selected(sync=True)
    assert viewer.layers["us_cine"].metadata["attnseg"]["modality"] == "US"
    assert type(viewer.layers["us_cine"]).__name__ == "Image"
    np.testing.assert_allclose(viewer.layers["us_cine"].scale, (1.0, 0.3, 0.3))
    w.set_path(SAMPLE / "ct_phantom_labels.nii.gz")
    w.open_selected(sync=True)
    assert type(viewer.layers["ct_phantom_labels"]).__name__ == "Labels"


def test_two_series_pick_second(make_napari_viewer, notes, two_series):
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    assert w.set_path(two_series)
    assert w.table.rowCount() == 2
    descs = [w.table.item(r, 0).text() for r in range(2)]
    row = descs.index("second series")
    w.select_series(row)
    assert w.preset_combo.currentText() == "MR"
    vol = w.open_selected(sync=True)
    assert vol.shape == (5, 128, 128) and vol.modality == "MR"
    assert any("second series" in layer.name for layer in viewer.layers)


def test_errors_become_notifications(make_napari_viewer, notes, tmp_path):
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    assert not w.set_path(bad)
    assert notes["error"] and "broken.nii.gz" in notes["error"][-1]
    assert not w.open_button.isEnabled()
    (tmp_path / "empty").mkdir()
    assert not w.set_path(tmp_path / "empty")
    assert len(notes["error"]) == 2
    assert w.open_selected(sync=True) is None  # nothing selected: a message, no crash
    assert "no series selected" in notes["error"][-1]
    assert len(viewer.layers) == 0


def test_read_job_is_a_progress_generator():
    from napari_attnseg._progress import drain

    cfg = LoadConfig(path=str(SAMPLE / "mr_phantom.nii.gz"), series_uid=None, preset="MR",
                     split_4d=None, name="mr")
    vol = drain(read_job(cfg))
    assert vol.modality == "MR" and vol.shape == (40, 128, 128)


def test_open_in_worker_thread(make_napari_viewer, qtbot, notes):
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    w.set_path(SAMPLE / "mr_phantom.nii.gz")
    w.preset_combo.setCurrentText("MR")
    w.open_button.click()
    qtbot.waitUntil(lambda: "mr_phantom" in viewer.layers, timeout=30000)
    qtbot.waitUntil(lambda: not w.runner.running, timeout=10000)
    assert viewer.layers["mr_phantom"].metadata["attnseg"]["modality"] == "MR"
    assert w.open_button.isEnabled() and notes["error"] == []


def test_4d_nifti_pick_volume(make_napari_viewer, notes, tmp_path):
    import nibabel as nib

    data = np.zeros((4, 5, 6, 3), np.float32)
    for t in range(3):
        data[..., t] = 10.0 * t + np.arange(6)[None, None, :]
    nib.Nifti1Image(data, np.diag([1.0, 2.0, 3.0, 1.0])).to_filename(str(tmp_path / "f.nii.gz"))
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    assert w.set_path(tmp_path / "f.nii.gz")
    assert w.volume_spin.value() == 0  # a 4D file: volume 0 preselected, not a crash
    w.volume_spin.setValue(2)
    vol = w.open_selected(sync=True)
    assert vol.shape == (6, 5, 4) and notes["error"] == []
    np.testing.assert_allclose(vol.data[:, 0, 0], 20.0 + np.arange(6))
