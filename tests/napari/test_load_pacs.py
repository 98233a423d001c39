"""Load widget, PACS tab, against a real Orthanc with its DICOMweb plugin (tests/core/_orthanc.py,
started on 127.0.0.1 for this module and stopped; skipped with the reason when not installed):
search in a worker, retrieve and open into a real viewer (the same layer as opening the local
DICOM folder), send a Labels layer back as a DICOM-SEG and find it on the server by QIDO."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dicomweb_client")
hd = pytest.importorskip("highdicom")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from _orthanc import CT_DICOM, free_port, orthanc_server, store_sample_ct  # noqa: E402

from napari_attnseg.io import read_volume  # noqa: E402
from napari_attnseg.widgets.load import LoadWidget  # noqa: E402

WAIT_MS = 120_000  # loaded CI machines: highdicom writing a 24-slice SEG takes ~20 s at worst


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    with orthanc_server(tmp_path_factory.mktemp("orthanc")) as base:
        yield base


@pytest.fixture(scope="module")
def stored_ct(orthanc):
    return store_sample_ct(orthanc)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """The cache and the remembered server live in tmp_path, never in the user's home."""
    from qtpy.QtCore import QSettings

    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path / "cache"))
    QSettings.setPath(QSettings.IniFormat, QSettings.UserScope, str(tmp_path / "settings"))
    QSettings.setPath(QSettings.NativeFormat, QSettings.UserScope, str(tmp_path / "settings"))


@pytest.fixture
def notes(monkeypatch):
    seen = {"error": [], "warning": []}
    import napari.utils.notifications as n

    monkeypatch.setattr(n, "show_error", lambda m: seen["error"].append(str(m)))
    monkeypatch.setattr(n, "show_warning", lambda m: seen["warning"].append(str(m)))
    return seen


def _wait(qtbot, panel):
    qtbot.waitUntil(lambda: not panel.runner.running, timeout=WAIT_MS)


def test_search_retrieve_open_and_send_a_seg(make_napari_viewer, qtbot, notes, orthanc,
                                             stored_ct):
    from dicomweb_client.api import DICOMwebClient

    _, ct = stored_ct
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    p = w.pacs
    assert w.tabs.tabText(w.tabs.indexOf(p)) == "PACS"
    p.server_edit.setText(orthanc)
    p.patient_edit.setText("phantom ct")
    p.modality_combo.setCurrentText("CT")
    p.search_button.click()  # in a worker
    assert p.runner.running and not p.search_button.isEnabled()
    _wait(qtbot, p)
    assert notes["error"] == [] and p.table.rowCount() == 1
    assert p.table.item(0, 5).text() == "24" and p.table.item(0, 4).text() == "CT"
    assert p.table.item(0, 3).text() == str(ct.SeriesDescription)
    assert p.selected_hit().series_uid == str(ct.SeriesInstanceUID)
    assert LoadWidget(viewer).pacs.server_edit.text() == orthanc  # remembered

    p.retrieve_button.click()  # fetch into the cache and open, in a worker
    _wait(qtbot, p)
    assert notes["error"] == [], notes
    (image,) = [ly for ly in viewer.layers if type(ly).__name__ == "Image"]
    assert image.metadata["attnseg"]["pacs_url"] == p.hits[0].url
    # the same layer as the Load widget opening the local DICOM folder
    local = LoadWidget(viewer)
    assert local.set_path(CT_DICOM, sync=True) and local.open_selected(sync=True) is not None
    twin = local.last_layers[0]
    assert np.array_equal(np.asarray(image.data), np.asarray(twin.data))
    assert np.array_equal(np.asarray(image.data), read_volume(CT_DICOM).data)
    np.testing.assert_allclose(image.scale, twin.scale)
    np.testing.assert_allclose(image.translate, twin.translate)
    np.testing.assert_allclose(image.affine.affine_matrix, twin.affine.affine_matrix)
    assert image.metadata["attnseg"]["modality"] == twin.metadata["attnseg"]["modality"] == "CT"
    viewer.layers.remove(twin)

    # a trivial result drawn on the retrieved scan (a plain napari Labels layer, no metadata)
    mask = np.zeros(image.data.shape, np.uint8)
    mask[8:16, 30:70, 40:90] = 1
    mask[2, 5:10, 5:10] = 2
    viewer.add_labels(mask, name="my result", scale=image.scale, translate=image.translate)
    assert p.labels_combo.currentText() == "my result"
    p.send_button.click()
    _wait(qtbot, p)
    assert notes["error"] == [], notes
    stored = p.last_stored
    assert f"SOPInstanceUID {stored.sop_instance_uid}" in p.progress.status.text()

    # Orthanc now has a SEG series in the study, referencing the CT series (QIDO, WADO)
    client = DICOMwebClient(url=orthanc, timeout=30)
    rows = client.search_for_series(str(ct.StudyInstanceUID), search_filters={"Modality": "SEG"})
    assert [r["0020000E"]["Value"][0] for r in rows] == [stored.series_uid]
    (inst,) = client.search_for_instances(str(ct.StudyInstanceUID), stored.series_uid)
    assert inst["00080018"]["Value"][0] == stored.sop_instance_uid
    (seg_ds,) = client.retrieve_series(str(ct.StudyInstanceUID), stored.series_uid)
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    assert len(seg.SegmentSequence) == 2
    back = read_volume(stored.url)  # opens on the scan's grid, with the drawn voxels
    assert back.same_grid(read_volume(CT_DICOM))
    assert np.array_equal(back.data, mask)


def test_errors_are_one_notification_and_the_tab_stays_usable(make_napari_viewer, qtbot, notes,
                                                               orthanc, stored_ct):
    viewer = make_napari_viewer()
    p = LoadWidget(viewer).pacs
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    p.server_edit.setText(closed)
    p.search()
    _wait(qtbot, p)
    assert len(notes["error"]) == 1 and closed in notes["error"][0]
    assert "cannot reach" in notes["error"][0] and p.search_button.isEnabled()
    p.server_edit.setText(orthanc + "/nope")
    assert p.search(sync=True) is None and "answered 404" in notes["error"][1]
    # still usable: a good search works
    p.server_edit.setText(orthanc)
    assert len(p.search(sync=True)) >= 1 and p.table.rowCount() >= 1
    # a Labels layer on no DICOM series: a clear message, nothing sent
    viewer.add_labels(np.zeros((4, 5, 6), np.uint8), name="stray")
    assert p.send_labels() is None
    assert "not on a DICOM series' grid" in notes["error"][2] and len(notes["error"]) == 3
    assert p.send_button.isEnabled() and p.retrieve_button.isEnabled()
