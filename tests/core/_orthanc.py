"""A real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) on 127.0.0.1 for a test module:
:func:`orthanc_server` starts it on a free port in a scratch folder, yields its DICOMweb root
and stops it (terminate, then kill after 15 s); it skips with the reason when Orthanc or its
DICOMweb plugin is not installed. Used by tests/core/test_dicomweb_orthanc.py and
tests/napari/test_load_pacs.py (never a mock)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CT_DICOM = ROOT / "sample_data" / "ct_dicom"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def skip_without_orthanc() -> str:
    """The Orthanc binary, or skip the test with the reason."""
    binary = shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None)
    if binary is None or not PLUGIN.is_file():
        pytest.skip("Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc "
                    "orthanc-dicomweb; .ci/run installs them)")
    return binary


@contextlib.contextmanager
def orthanc_server(work: Path) -> Iterator[str]:
    """Run Orthanc with its database in ``work``; yields ``http://127.0.0.1:PORT/dicom-web``."""
    binary = skip_without_orthanc()
    import requests

    port = free_port()
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


def store_sample_ct(base: str):
    """STOW-RS the sample CT series; returns (its series URL, its first dataset)."""
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    datasets = [pydicom.dcmread(str(f)) for f in sorted(CT_DICOM.iterdir())]
    DICOMwebClient(url=base, timeout=30).store_instances(datasets)
    ds = datasets[0]
    return f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}", ds
