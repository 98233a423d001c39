"""Load scan widget: series table, modality (auto from the file, or set), 2D pixel size, geometry
summary, open; listing and reading off the GUI thread."""

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
    assert w.set_path(SAMPLE / "ct_dicom", sync=True)
    assert w.table.rowCount() == 1
    assert w.table.item(0, 1).text() == "CT"
    assert w.table.item(0, 2).text() == "24 x 128 x 128"
    # a new path: back to "auto", which says what the Modality tag says
    assert w.preset() == "auto" and "CT (DICOM Modality tag)" in w.preset_combo.currentText()
    assert w.open_button.isEnabled()
    vol = w.open_selected(sync=True)
    assert vol is not None and notes["error"] == []
    layer = viewer.layers["ct_dicom"]
    assert layer.metadata["attnseg"]["modality"] == "CT"
    np.testing.assert_allclose(layer.metadata["attnseg"]["spacing"], (2.5, 0.8, 0.8), rtol=1e-5)
    assert float(np.asarray(layer.data).min()) <= -900  # HU (air), rescale applied
    text = w.summary_label.text()
    assert "Orientation: LPS" in text and "2.5 x 0.8 x 0.8" in text and "Anisotropy: 3.12" in text
    assert "(z, y, x)" in text and "Modality: CT (from the DICOM Modality tag)" in text


def test_preset_choice_is_stored(make_napari_viewer, notes):
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    assert w.set_path(SAMPLE / "mr_phantom.nii.gz", sync=True)
    assert w.preset() == "auto"  # not CT for every NIfTI: what the file says
    w.preset_combo.setCurrentText("US")  # the user's word wins
    w.open_selected(sync=True)
    assert viewer.layers["mr_phantom"].metadata["attnseg"]["modality"] == "US"
    assert "Modality: US (set by you)" in w.summary_label.text()
    assert w.set_path(SAMPLE / "us_cine.nii.gz", sync=True)
    w.open_selected(sync=True)  # auto: the NIfTI description says "US cine"
    assert viewer.layers["us_cine"].metadata["attnseg"]["modality"] == "US"
    assert type(viewer.layers["us_cine"]).__name__ == "Image"
    np.testing.assert_allclose(viewer.layers["us_cine"].scale, (1.0, 0.3, 0.3))
    w.set_path(SAMPLE / "ct_phantom_labels.nii.gz", sync=True)
    w.open_selected(sync=True)
    assert type(viewer.layers["ct_phantom_labels"]).__name__ == "Labels"


def test_two_series_pick_second(make_napari_viewer, notes, two_series):
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    assert w.set_path(two_series, sync=True)
    assert w.table.rowCount() == 2
    descs = [w.table.item(r, 0).text() for r in range(2)]
    row = descs.index("second series")
    w.select_series(row)
    assert w.preset() == "auto" and "MR" in w.preset_combo.currentText()
    vol = w.open_selected(sync=True)
    assert vol.shape == (5, 128, 128) and vol.modality == "MR"
    assert any("second series" in layer.name for layer in viewer.layers)


def test_errors_become_notifications(make_napari_viewer, notes, tmp_path):
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    assert not w.set_path(bad, sync=True)
    assert notes["error"] and "broken.nii.gz" in notes["error"][-1]
    assert not w.open_button.isEnabled() and "Cannot open" in w.summary_label.text()
    (tmp_path / "empty").mkdir()
    assert not w.set_path(tmp_path / "empty", sync=True)
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
    w.set_path(SAMPLE / "mr_phantom.nii.gz")  # listed in a worker too
    qtbot.waitUntil(lambda: w.open_button.isEnabled(), timeout=30000)
    assert w.list_runner.error is None and w.table.rowCount() == 1
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
    assert w.set_path(tmp_path / "f.nii.gz", sync=True)
    assert w.volume_spin.value() == 0  # a 4D file: volume 0 preselected, not a crash
    w.volume_spin.setValue(2)
    vol = w.open_selected(sync=True)
    assert vol.shape == (6, 5, 4) and notes["error"] == []
    np.testing.assert_allclose(vol.data[:, 0, 0], 20.0 + np.arange(6))


def _png(path, arr):
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(str(path), arr)
    return path


def test_2d_image_pixel_size_from_the_csv_or_the_field(make_napari_viewer, notes, tmp_path):
    rng = np.random.default_rng(0)
    img = _png(tmp_path / "images" / "001_HC.png", rng.integers(0, 256, (30, 40), dtype=np.uint8))
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 5:25] = 1
    m = _png(tmp_path / "masks" / "001_HC_mask.png", mask)
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    # no CSV: modality unknown (a grey PNG is not CT), 1 mm assumed and said so
    assert w.set_path(img, sync=True)
    assert w.pixel_spin.isEnabled() and w.preset() == "auto"
    w.open_selected(sync=True)
    text = w.summary_label.text()
    assert "(y, x)" in text and "(z, y, x)" not in text
    assert "assumed" in text and "Modality: unknown" in text
    assert viewer.layers["001_HC.png"].metadata["attnseg"]["modality"] == ""
    # the pixel-size field
    w.pixel_spin.setValue(0.25)
    viewer.layers.clear()
    w.open_selected(sync=True)
    np.testing.assert_allclose(viewer.layers["001_HC.png"].scale, (0.25, 0.25))
    # an HC18 CSV beside the folders: pixel size and ultrasound, found by the reader
    (tmp_path / "pixel_size_and_hc.csv").write_text(
        "filename,pixel_size_mm,head_circumference_mm\n001_HC.png,0.125,40\n")
    viewer.layers.clear()
    assert w.set_path(img, sync=True)
    assert w.pixel_spin.value() == 0.0  # "auto" again for a new path
    assert "US" in w.preset_combo.currentText()  # the CSV says so before reading
    w.open_selected(sync=True)
    layer = viewer.layers["001_HC.png"]
    np.testing.assert_allclose(layer.scale, (0.125, 0.125))
    assert layer.metadata["attnseg"]["modality"] == "US"
    assert "from pixel_size_and_hc.csv" in w.summary_label.text()
    # the mask opens as labels on the same pixel grid
    assert w.set_path(m, sync=True)
    w.open_selected(sync=True)
    lab = viewer.layers["001_HC_mask.png"]
    assert type(lab).__name__ == "Labels"
    np.testing.assert_allclose(lab.scale, (0.125, 0.125))


def test_options_form_is_built_from_load_params(make_napari_viewer, tmp_path):
    """Issue 11: the Load options are a LoadParams form (magicgui): one row per field with the
    field's label and default; the Qt handles scripts use are the form's own widgets, and
    what they hold goes into the read job's LoadConfig."""
    import dataclasses

    from napari_attnseg.widgets.load import AUTO_PIXEL_TEXT, LoadParams

    w = LoadWidget(make_napari_viewer())
    names = [f.name for f in dataclasses.fields(LoadParams)]
    assert [x.name for x in w.form] == names
    assert [x.label for x in w.form] == ["Modality", "Pixel size", "4D volume"]
    assert "-1: the file is 3D" in w.volume_spin.toolTip()
    assert w.preset_combo is w.form.modality.native and w.pixel_spin is w.form.pixel_size_mm.native
    assert [w.preset_combo.itemText(i) for i in range(w.preset_combo.count())] == \
        ["auto", "CT", "MR", "US", "unknown"]
    assert (w.form.modality.value, w.form.pixel_size_mm.value, w.form.volume.value) == \
        ("auto", 0.0, -1)
    assert w.pixel_spin.specialValueText() == AUTO_PIXEL_TEXT and w.pixel_spin.decimals() == 4
    from PIL import Image

    image = tmp_path / "scan.png"
    Image.fromarray((np.arange(64 * 80).reshape(64, 80) % 251).astype(np.uint8)).save(image)
    assert w.set_path(image, sync=True)
    assert w.pixel_spin.isEnabled()  # a 2D image: the pixel size applies
    w.form.pixel_size_mm.value = 0.25
    w.form.modality.value = "US"
    cfg = w.config()
    assert cfg.preset == "US" and cfg.pixel_size_mm == pytest.approx(0.25)
