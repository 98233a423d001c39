"""DICOMweb (QIDO-RS / WADO-RS / STOW-RS) with dicomweb-client (the optional extra ``pacs``).

* A series URL ``http://HOST:PORT/dicom-web/studies/<study>/series/<series>`` is a scan:
  :func:`fetch_series` retrieves its instances (WADO-RS) into a local cache folder
  (``$ATTNSEG_CACHE/dicomweb/<study>/<series>/``, default ``~/.cache/napari-attnseg``), reused
  while the server lists the same instances (QIDO-RS), and returns the folder, which the DICOM
  reader reads like any other. :func:`fetch_series_job` / :func:`local_path_job` do the same
  as progress generators (one report per instance; closing them stops the transfer and leaves
  no partial folder in the cache), for the Load widget.
* :func:`store_file` sends a DICOM file (a DICOM-SEG result) to ``http://HOST:PORT/dicom-web``
  (STOW-RS) and checks that the server lists it afterwards.

Connection problems give one message naming the server. Nothing is fetched unless the user gave
the URL. Queries (QIDO-RS search by patient, study, modality) are in :mod:`.pacs_query`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

from .._progress import Progress, drain
from ..errors import MissingDependencyError, ReadError, WriteError

log = logging.getLogger(__name__)

_SERIES_URL = re.compile(r"^(https?://.+?)/studies/([0-9.]+)/series/([0-9.]+)/?$")
#: seconds to wait for the server per request
TIMEOUT = 60


def is_url(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def parse_series_url(url: str) -> tuple[str, str, str]:
    """(DICOMweb base URL, StudyInstanceUID, SeriesInstanceUID) of a series URL."""
    m = _SERIES_URL.match(url.strip())
    if not m:
        raise ReadError(url, "not a DICOMweb series URL; expected "
                             "http://HOST:PORT/dicom-web/studies/<StudyUID>/series/<SeriesUID>")
    return m.group(1), m.group(2), m.group(3)


def _client(base: str) -> Any:
    try:
        from dicomweb_client.api import DICOMwebClient
    except ImportError as exc:
        raise MissingDependencyError("dicomweb-client", extra="pacs",
                                     purpose="DICOMweb (PACS) access") from exc
    client = DICOMwebClient(url=base.rstrip("/"), timeout=TIMEOUT, session=_wildcard_session())
    # 3 tries 0.25 s and 0.5 s apart for busy servers (429/503...), not 5 over 30 s
    client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=250)
    return client


def _wildcard_session() -> Any:
    """A requests session that sends QIDO wildcards as ``*``: dicomweb-client percent-encodes
    them (``%2A``), which Orthanc 1.10 (DICOMweb 1.7) matches literally, so ``PatientName=Doe*``
    found nothing. ``*`` is legal in a query string and means the same to every server."""
    import requests

    class _Session(requests.Session):
        def send(self, request: Any, **kwargs: Any) -> Any:
            if request.url and "%2A" in request.url:
                request.url = request.url.replace("%2A", "*")
            return super().send(request, **kwargs)

    return _Session()


def _request_errors() -> tuple[type[BaseException], ...]:
    import requests

    return (requests.exceptions.RequestException,)


def cache_root() -> Path:
    env = os.environ.get("ATTNSEG_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "napari-attnseg") / "dicomweb"


def _listed(client: Any, study: str, series: str) -> set[str]:
    rows = client.search_for_instances(study_instance_uid=study, series_instance_uid=series,
                                       fields=["SOPInstanceUID"], get_remaining=True)
    return {str(r.get("00080018", {}).get("Value", [""])[0]) for r in rows} - {""}


def fetch_series_job(url: str, *, cache: Path | None = None) -> Generator[Progress, None, Path]:
    """:func:`fetch_series` as a progress generator: one report per instance retrieved."""
    base, study, series = parse_series_url(url)
    client = _client(base)
    folder = (cache or cache_root()) / study / series
    yield Progress(0, 1, "query", f"Asking {base} for the series...")
    try:
        listed = _listed(client, study, series)
    except _request_errors() as exc:
        raise _unreachable(url, base, exc) from exc
    if not listed:
        raise ReadError(url, "the server lists no instances for this series")
    have = {p.stem for p in folder.glob("*.dcm")} if folder.is_dir() else set()
    if have == listed:
        log.info("%s: %d instances from the cache %s", url, len(have), folder)
        yield Progress(len(have), len(have), "retrieve", f"{len(have)} images from the cache")
        return folder
    total = len(listed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{series}."))
    done = 0
    try:
        try:
            for ds in client.iter_series(study, series):
                ds.save_as(str(tmp / f"{ds.SOPInstanceUID}.dcm"), enforce_file_format=True)
                done += 1
                yield Progress(done, total, "retrieve", f"Retrieved {done}/{total} images")
        except _request_errors() as exc:
            raise _unreachable(url, base, exc) from exc
        if not done:
            raise ReadError(url, "the server sent no instances for this series")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: retrieved %d instances into %s", url, done, folder)
    return folder


def _unreachable(url: str, base: str, exc: BaseException) -> ReadError:
    return ReadError(url, f"cannot reach or read the DICOMweb server {base} "
                          f"({type(exc).__name__}: {exc})")


def fetch_series(url: str, *, cache: Path | None = None) -> Path:
    """The folder holding the series at ``url`` (retrieved now, or the cached copy when the
    server still lists exactly the same instances)."""
    return drain(fetch_series_job(url, cache=cache))


def local_path_job(url: str, *, cache: Path | None = None) -> Generator[Progress, None, Path]:
    """:func:`local_path` as a progress generator."""
    from .dicom_seg import is_dicom_seg

    folder = yield from fetch_series_job(url, cache=cache)
    files = sorted(folder.glob("*.dcm"))
    if len(files) != 1 or not is_dicom_seg(files[0]):
        return folder
    import pydicom

    seg = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    refs = seg.get("ReferencedSeriesSequence") or []
    base, study, _ = parse_series_url(url)
    for ref in refs[:1]:
        try:
            yield from fetch_series_job(f"{base}/studies/{study}/series/{ref.SeriesInstanceUID}",
                                        cache=cache)
        except ReadError as exc:  # the SEG still opens, on its own frames (with a warning)
            log.warning("the series the SEG references could not be fetched: %s", exc)
    return files[0]


def local_path(url: str, *, cache: Path | None = None) -> Path:
    """What to read for a series URL: the cached series folder, or for a series that is one
    DICOM-SEG the SEG file itself, with the series it references fetched beside it (so it opens
    on the scan's grid)."""
    return drain(local_path_job(url, cache=cache))


def store_file(path: str | Path, base: str) -> str:
    """STOW-RS the DICOM file ``path`` to the DICOMweb server ``base``; returns the stored
    series' URL once the server lists the instance."""
    import pydicom

    if _SERIES_URL.match(base.strip()):
        raise WriteError(base, "give the server's DICOMweb root (http://HOST:PORT/dicom-web) "
                               "to store a result, not a series URL")
    client = _client(base)
    ds = pydicom.dcmread(str(path))
    study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    try:
        resp = client.store_instances([ds])
        failed = resp.get("FailedSOPSequence") if resp is not None else None
        if failed:
            raise WriteError(base, f"the server refused the instance ({failed[0]})")
        listed = _listed(client, study, series)
    except _request_errors() as exc:
        raise WriteError(base, f"cannot store on the DICOMweb server ({type(exc).__name__}: "
                               f"{exc})") from exc
    if str(ds.SOPInstanceUID) not in listed:
        raise WriteError(base, "the server accepted the instance but does not list it")
    url = f"{base.rstrip('/')}/studies/{study}/series/{series}"
    log.info("stored %s as %s", Path(path).name, url)
    return url
