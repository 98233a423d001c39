"""DICOMweb against a real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``), started on
127.0.0.1 for this module and stopped after it (tests/core/_orthanc.py): store the sample CT
(STOW-RS), segment it from its series URL (QIDO-RS + WADO-RS into the cache), store the
DICOM-SEG back with ``-o http://127.0.0.1:PORT/dicom-web`` and find it on the server beside the
scan; search series by patient, study, modality (QIDO-RS); send a label volume as a SEG."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dicomweb_client")
hd = pytest.importorskip("highdicom")

sys.path.insert(0, str(Path(__file__).parent))
from _orthanc import CT_DICOM, free_port, orthanc_server, store_sample_ct  # noqa: E402

from napari_attnseg.cli import main  # noqa: E402
from napari_attnseg.errors import ReadError  # noqa: E402
from napari_attnseg.io import read_volume  # noqa: E402
from napari_attnseg.io.dicomweb import fetch_series, parse_series_url  # noqa: E402
from napari_attnseg.io.pacs_query import search, send_seg  # noqa: E402

MR_UIDS = ("1.2.826.0.1.3680043.10.1234.77.1", "1.2.826.0.1.3680043.10.1234.77.2")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    with orthanc_server(tmp_path_factory.mktemp("orthanc")) as base:
        yield base


@pytest.fixture(scope="module")
def stored_ct(orthanc):
    return store_sample_ct(orthanc)


@pytest.fixture(scope="module")
def stored_mr(orthanc):
    """A second patient: 5 CT slices re-labelled as an MR series of 'Doe^Jane' (new UIDs)."""
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    out = []
    for i, f in enumerate(sorted(CT_DICOM.iterdir())[:5]):
        ds = pydicom.dcmread(str(f))
        ds.PatientID, ds.PatientName, ds.Modality = "DOE-77", "Doe^Jane", "MR"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = MR_UIDS
        ds.SOPInstanceUID = f"{MR_UIDS[1]}.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDescription, ds.SeriesDescription = "Brain follow up", "T1 axial"
        ds.StudyDate = "20230615"
        out.append(ds)
    DICOMwebClient(url=orthanc, timeout=30).store_instances(out)
    return out[0]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSEG_CACHE", str(tmp_path / "cache"))


def test_series_url_reads_like_the_local_series(stored_ct):
    url, _ = stored_ct
    remote = read_volume(url)
    local = read_volume(CT_DICOM)
    assert np.array_equal(remote.data, local.data) and remote.same_grid(local)
    folder = fetch_series(url)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert fetch_series(url) == folder  # the cached copy while the server lists the same
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def test_predict_from_the_pacs_stores_the_seg_back(stored_ct, orthanc, capsys):
    from dicomweb_client.api import DICOMwebClient

    url, ct = stored_ct
    assert main(["predict", url, "-o", orthanc, "--model", "ct-phantom-2d", "--threads", "1"]) == 0
    assert "stored the DICOM-SEG on the server" in capsys.readouterr().err
    client = DICOMwebClient(url=orthanc, timeout=30)
    series = client.search_for_series(str(ct.StudyInstanceUID))
    seg_rows = [s for s in series if s["00080060"]["Value"][0] == "SEG"]
    assert len(seg_rows) == 1
    seg_uid = seg_rows[0]["0020000E"]["Value"][0]
    (seg_ds,) = client.retrieve_series(str(ct.StudyInstanceUID), seg_uid)
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    assert {d.SegmentLabel for d in seg.SegmentSequence} <= {"organ", "lesion"}
    # and the SEG from the server opens on the scan's grid
    back = read_volume(f"{orthanc}/studies/{ct.StudyInstanceUID}/series/{seg_uid}")
    assert back.is_labels and back.data.any()


def test_bad_urls_say_what_is_wrong(orthanc):
    with pytest.raises(ReadError, match="not a DICOMweb series URL"):
        parse_series_url(f"{orthanc}/studies/1.2.3")
    closed = f"http://127.0.0.1:{free_port()}/dicom-web/studies/1.2/series/3.4"
    with pytest.raises(ReadError, match="cannot reach"):
        read_volume(closed)
    assert main(["predict", f"{orthanc}/studies/1.2.3/series/4.5.6", "-o", "x.nii.gz"]) == 2


def _expected(ds, base, n):
    return dict(patient_id=str(ds.PatientID), patient_name=str(ds.PatientName),
                study_date=str(ds.StudyDate), study_description=str(ds.StudyDescription),
                series_description=str(ds.SeriesDescription), modality=str(ds.Modality),
                n_instances=n, study_uid=str(ds.StudyInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
                url=f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}")


def test_search_by_patient_study_series_and_modality(orthanc, stored_ct, stored_mr):
    _, ct = stored_ct
    want = {str(ct.SeriesInstanceUID): _expected(ct, orthanc, 24),
            MR_UIDS[1]: _expected(stored_mr, orthanc, 5)}
    hits = search(orthanc)
    got = {h.series_uid: h for h in hits}
    assert set(want) <= set(got)
    assert {h.modality for h in hits if h.series_uid not in want} <= {"SEG"}  # other tests' SEGs
    for uid, fields in want.items():
        assert {k: getattr(got[uid], k) for k in fields} == fields

    def uids(**kw):
        return {h.series_uid for h in search(orthanc, **kw) if h.modality != "SEG"}

    ct_uid = str(ct.SeriesInstanceUID)
    assert uids(patient="phantom ct") == {ct_uid}  # a person name, any case, words in order
    assert uids(patient="DOE-77") == uids(patient="doe") == uids(patient="77") == {MR_UIDS[1]}
    assert uids(study="brain follow") == {MR_UIDS[1]}
    assert uids(study=str(ct.StudyInstanceUID)) == {ct_uid}
    assert uids(series="t1") == uids(series=MR_UIDS[1]) == {MR_UIDS[1]}
    assert uids(modality="mr") == {MR_UIDS[1]} and uids(modality="CT") == {ct_uid}
    assert uids(patient="doe", modality="CT") == set()
    assert uids(patient="Phan*") == {ct_uid}  # the user's own wildcard
    assert len(search(orthanc, limit=1)) == 1
    # a hit's URL reads like the local series
    assert read_volume(got[MR_UIDS[1]].url).shape[0] == 5


def test_search_errors_name_the_server(orthanc):
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(ReadError, match=f"{closed}: cannot reach the DICOMweb server"):
        search(closed, patient="x")
    with pytest.raises(ReadError, match="answered 404 .* DICOMweb root"):
        search(orthanc + "/nope")
    # Orthanc's REST root, not its DICOMweb one: 400 to a QIDO query (or a non-DICOM answer)
    with pytest.raises(ReadError, match="(answered 400|not DICOM JSON).* DICOMweb root"):
        search(orthanc.rsplit("/dicom-web", 1)[0])
    for bad in ("", "ftp://host/dicom-web", "localhost:8042"):
        with pytest.raises(ReadError, match="not a DICOMweb server URL"):
            search(bad)
    # a series URL pasted as the server: its root is used
    assert search(f"{orthanc}/studies/1.2.3/series/4.5.6", patient="nobody-here") == []


def test_send_seg_stores_a_seg_referencing_the_scan(orthanc, stored_ct):
    from dicomweb_client.api import DICOMwebClient

    _, ct = stored_ct
    vol = read_volume(CT_DICOM)
    mask = np.zeros(vol.shape, np.uint8)
    mask[10:14, 40:80, 50:90] = 1
    mask[3, 5:9, 5:9] = 2
    labels = replace(vol, data=mask, is_labels=True)
    stored = send_seg(labels, orthanc, provenance={"label_names": {1: "organ", 2: "lesion"}})
    assert stored.referenced_series_uid == str(ct.SeriesInstanceUID)
    client = DICOMwebClient(url=orthanc, timeout=30)
    rows = client.search_for_instances(str(ct.StudyInstanceUID), stored.series_uid)
    assert [r["00080018"]["Value"][0] for r in rows] == [stored.sop_instance_uid]
    back = read_volume(stored.url)
    assert back.is_labels and back.same_grid(vol)
    assert np.array_equal(back.data, mask)


def test_cancelled_retrieval_leaves_nothing_in_the_cache(stored_ct, tmp_path):
    from napari_attnseg._progress import Cancelled, drain
    from napari_attnseg.io.dicomweb import fetch_series_job

    url, _ = stored_ct
    cache = tmp_path / "c"
    seen = []

    def stop_after_three(p):  # what the widget's Cancel does: close the job at a report
        seen.append(p)
        return not (p.stage == "retrieve" and p.done >= 3)

    with pytest.raises(Cancelled):
        drain(fetch_series_job(url, cache=cache), stop_after_three)
    assert (seen[-1].done, seen[-1].total) == (3, 24)
    assert not any(cache.rglob("*.dcm"))  # neither the series folder nor a hidden partial one
    assert len(list(fetch_series(url, cache=cache).glob("*.dcm"))) == 24
