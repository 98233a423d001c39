"""DICOMweb against a real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``), started on
127.0.0.1 for this module and stopped after it: store the sample CT (STOW-RS), segment it from
its series URL (QIDO-RS + WADO-RS into the cache), store the DICOM-SEG back with
``-o http://127.0.0.1:PORT/dicom-web`` and find it on the server beside the scan."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("dicomweb_client")
hd = pytest.importorskip("highdicom")

from napari_attnseg.cli import main  # noqa: E402
from napari_attnseg.errors import ReadError  # noqa: E402
from napari_attnseg.io import read_volume  # noqa: E402
from napari_attnseg.io.dicomweb import fetch_series, parse_series_url  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CT_DICOM = ROOT / "sample_data" / "ct_dicom"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    binary = shutil.which("Orthanc")
    if binary is None or not PLUGIN.is_file():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc "
                    "orthanc-dicomweb; .ci/run installs them)")
    import requests

    work = tmp_path_factory.mktemp("orthanc")
    port = _free_port()
    config = {"Name": "attnseg-test", "StorageDirectory": str(work / "db"),
              "IndexDirectory": str(work / "db"), "HttpPort": port, "DicomServerEnabled": False,
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
              "Plugins": [str(PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
              "HttpTimeout": 30, "ConcurrentJobs": 1}
    (work / "orthanc.json").write_text(json.dumps(config))
    log = open(work / "orthanc.log", "wb")
    proc = subprocess.Popen([binary, str(work / "orthanc.json")], stdout=log,
                            stderr=subprocess.STDOUT, cwd=work)
    base = f"http://127.0.0.1:{port}/dicom-web"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Orthanc exited ({proc.returncode}): "
                            f"{(work / 'orthanc.log').read_text(errors='replace')[-2000:]}")
            try:
                if requests.get(f"{base}/studies", timeout=2).status_code == 200:
                    break
            except requests.exceptions.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not answer within {START_TIMEOUT:.0f} s")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def stored_ct(orthanc):
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    datasets = [pydicom.dcmread(str(f)) for f in sorted(CT_DICOM.iterdir())]
    DICOMwebClient(url=orthanc, timeout=30).store_instances(datasets)
    ds = datasets[0]
    url = f"{orthanc}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    return url, ds


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
    closed = f"http://127.0.0.1:{_free_port()}/dicom-web/studies/1.2/series/3.4"
    with pytest.raises(ReadError, match="cannot reach"):
        read_volume(closed)
    assert main(["predict", f"{orthanc}/studies/1.2.3/series/4.5.6", "-o", "x.nii.gz"]) == 2
