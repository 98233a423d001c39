"""Find series on a DICOMweb server (QIDO-RS) and send a label result back as a DICOM-SEG.

:func:`search` asks ``http://HOST:PORT/dicom-web`` for series by patient (ID or name), study
(StudyInstanceUID, or words of its description), series (SeriesInstanceUID, or words of its
description) and modality, and returns :class:`SeriesHit` records whose ``url`` is a series URL
that :func:`napari_attnseg.io.dicomweb.local_path` (and every reader) takes. Free text matches
as QIDO wildcards, case-insensitively where the server allows: ``"doe jo"`` becomes ``*doe*jo*``
(spaces and ``^`` inside DICOM person names would otherwise never match); text that holds ``*``
or ``?`` is the user's own pattern. A patient is looked for by PatientID and by PatientName
(two queries, merged).

:func:`send_seg` writes a label volume on a DICOM series' grid as a DICOM-SEG (the writer of
:mod:`.dicom_seg`) to a temporary file, stores it (STOW-RS, checked by QIDO) and returns the
stored instance's UIDs. Errors (connection refused, 404, not a DICOMweb root) are
:class:`~napari_attnseg.errors.ReadError` / ``WriteError`` naming the server.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ReadError

#: attributes asked for (study and patient level ones too: QIDO returns only the keys asked)
FIELDS = ("PatientID", "PatientName", "StudyDate", "StudyDescription", "SeriesDescription",
          "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances", "StudyInstanceUID",
          "SeriesInstanceUID")
_TAGS = {"PatientID": "00100020", "PatientName": "00100010", "StudyDate": "00080020",
         "StudyDescription": "00081030", "SeriesDescription": "0008103E",
         "SeriesNumber": "00200011", "Modality": "00080060",
         "NumberOfSeriesRelatedInstances": "00201209", "StudyInstanceUID": "0020000D",
         "SeriesInstanceUID": "0020000E"}
_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class SeriesHit:
    """One series found on the server (what a results row shows)."""

    patient_id: str
    patient_name: str
    study_date: str  #: YYYYMMDD as the server has it ("" when absent)
    study_description: str
    series_description: str
    modality: str
    n_instances: int | None  #: None when the server does not say
    series_number: int | None
    study_uid: str
    series_uid: str
    url: str  #: ``BASE/studies/<study>/series/<series>``: open it like a local path

    @property
    def label(self) -> str:
        """A short name for a layer made from this series."""
        what = self.series_description or self.modality or self.series_uid
        who = self.patient_id or self.patient_name.replace("^", " ").strip()
        return f"{who} {what}".strip() if who else what


def server_root(base: str) -> str:
    """The DICOMweb root of ``base`` (checked to be an http(s) URL; a study or series URL
    pasted in its place is cut back to the root)."""
    text = str(base or "").strip()
    if not text.lower().startswith(("http://", "https://")) or len(text) < 10:
        raise ReadError(text or "(no server)", "not a DICOMweb server URL; expected "
                                               "http://HOST:PORT/dicom-web")
    return re.split(r"/studies(/|$)", text, maxsplit=1)[0].rstrip("/")


def pattern(text: str) -> str:
    """The QIDO match value for free text (see the module doc); "" for no filter."""
    text = str(text or "").strip()
    if not text:
        return ""
    if any(c in text for c in "*?"):
        return re.sub(r"[\s^]+", "*", text)
    words = [w for w in re.split(r"[\s^]+", text) if w]
    return "*" + "*".join(words) + "*"


def _value(row: Mapping[str, Any], keyword: str) -> Any:
    values = (row.get(_TAGS[keyword]) or {}).get("Value") or []
    if not values:
        return None
    v = values[0]
    if isinstance(v, dict):  # a person name: {"Alphabetic": "Doe^John"}
        return str(v.get("Alphabetic", "") or "")
    return v


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _hit(root: str, row: Mapping[str, Any]) -> SeriesHit | None:
    study, series = _value(row, "StudyInstanceUID"), _value(row, "SeriesInstanceUID")
    if not study or not series:
        return None
    text = {k: str(_value(row, k) or "") for k in ("PatientID", "PatientName", "StudyDate",
                                                    "StudyDescription", "SeriesDescription",
                                                    "Modality")}
    return SeriesHit(patient_id=text["PatientID"], patient_name=text["PatientName"],
                     study_date=text["StudyDate"], study_description=text["StudyDescription"],
                     series_description=text["SeriesDescription"], modality=text["Modality"],
                     n_instances=_int(_value(row, "NumberOfSeriesRelatedInstances")),
                     series_number=_int(_value(row, "SeriesNumber")), study_uid=str(study),
                     series_uid=str(series),
                     url=f"{root}/studies/{study}/series/{series}")


def _filters(study: str, series: str, modality: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value, uid_key, text_key in ((study, "StudyInstanceUID", "StudyDescription"),
                                     (series, "SeriesInstanceUID", "SeriesDescription")):
        value = str(value or "").strip()
        if value:
            out.update({uid_key: value} if _UID.match(value) else {text_key: pattern(value)})
    if str(modality or "").strip():
        out["Modality"] = str(modality).strip().upper()
    return out


def _query(client: Any, root: str, filters: dict[str, str], limit: int) -> list[Mapping]:
    from .dicomweb import _request_errors

    try:
        rows = client.search_for_series(search_filters=filters or None, fields=list(FIELDS),
                                        limit=limit)
    except _request_errors() as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None:
            raise ReadError(root, f"the DICOMweb server answered {status} to a series query: "
                                  "is this its DICOMweb root (e.g. http://HOST:8042/dicom-web)?"
                            ) from exc
        raise ReadError(root, f"cannot reach the DICOMweb server ({type(exc).__name__}: "
                              f"{exc})") from exc
    except ValueError as exc:  # an HTML page or other non-JSON answer
        raise ReadError(root, "the server's answer is not DICOM JSON: is this its DICOMweb "
                              "root (e.g. http://HOST:8042/dicom-web)?") from exc
    if not isinstance(rows, list) or any(not isinstance(r, Mapping) for r in rows):
        raise ReadError(root, "the server's answer is not DICOM JSON: is this its DICOMweb "
                              "root (e.g. http://HOST:8042/dicom-web)?")
    return rows


def search(base: str, *, patient: str = "", study: str = "", series: str = "",
           modality: str = "", limit: int = DEFAULT_LIMIT) -> list[SeriesHit]:
    """Series on the DICOMweb server ``base`` matching every given filter (see the module doc),
    sorted by patient, study date, study and series number; at most ``limit``."""
    from .dicomweb import _client

    root = server_root(base)
    limit = max(1, int(limit))
    client = _client(root)
    common = _filters(study, series, modality)
    patient = str(patient or "").strip()
    queries = [common] if not patient else [{**common, "PatientID": pattern(patient)},
                                            {**common, "PatientName": pattern(patient)}]
    hits: dict[str, SeriesHit] = {}
    for filters in queries:
        for row in _query(client, root, filters, limit):
            hit = _hit(root, row)
            if hit is not None:
                hits.setdefault(hit.series_uid, hit)
    ordered = sorted(hits.values(), key=lambda h: (h.patient_id, h.patient_name, h.study_date,
                                                  h.study_uid, h.series_number or 0,
                                                  h.series_uid))
    return ordered[:limit]


@dataclass(frozen=True)
class StoredSeg:
    """A DICOM-SEG stored on the server."""

    sop_instance_uid: str
    series_uid: str
    referenced_series_uid: str
    url: str  #: the SEG's series URL on the server


def send_seg(volume: Any, base: str, *, reference: Any = None,
             provenance: Mapping[str, Any] | None = None) -> StoredSeg:
    """Write ``volume`` (labels on a DICOM series' grid; ``reference`` the scan's volume when
    the labels do not carry its header) as a DICOM-SEG and store it on ``base``."""
    import pydicom

    from .dicom_seg import write_dicom_seg
    from .dicomweb import store_file

    root = server_root(base)
    with tempfile.TemporaryDirectory(prefix="attnseg-stow-") as tmp:
        path = write_dicom_seg(volume, Path(tmp) / "result.dcm", reference=reference,
                               provenance=provenance)
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        url = store_file(path, root)
    refs = ds.get("ReferencedSeriesSequence") or []
    return StoredSeg(sop_instance_uid=str(ds.SOPInstanceUID),
                     series_uid=str(ds.SeriesInstanceUID),
                     referenced_series_uid=str(refs[0].SeriesInstanceUID) if refs else "",
                     url=url)
