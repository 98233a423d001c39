"""The PACS tab of the Load widget: search a DICOMweb server, retrieve and open a series, send a
Labels layer back as a DICOM-SEG.

* *Server* (``http://HOST:PORT/dicom-web``, remembered in QSettings), *Patient* (ID or name),
  *Study* (UID or description words), *Series* (UID or description words), *Modality*;
  *Search* runs :func:`napari_attnseg.io.pacs_query.search` (QIDO-RS) in a worker and fills the
  results table.
* *Retrieve and open* fetches the selected series into the local cache
  (:func:`napari_attnseg.io.dicomweb.local_path_job`, one progress step per image, Cancel stops
  the transfer and keeps nothing half-written), then reads the cached folder with the Load
  widget's own :func:`~napari_attnseg.widgets.load.read_job` and adds it with its ``_add``:
  the layer (geometry, modality, display) is the one the local DICOM folder gives.
* *Send result to PACS* writes the chosen Labels layer as a DICOM-SEG referencing the DICOM
  series it was drawn on (the layer's own header, else an Image layer of the same shape opened
  from a DICOM series, the last one retrieved first) and stores it (STOW-RS, checked by QIDO)
  in a worker; the status line gives the stored SOPInstanceUID.

Every job runs in a :class:`~napari_attnseg.widgets._worker.JobRunner`: an error is one
notification and the tab stays usable.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import numpy as np
from qtpy.QtCore import QSettings
from qtpy.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLineEdit, QPushButton,
                            QTableWidgetItem, QVBoxLayout, QWidget)

from .._progress import Progress
from ._worker import JobRunner, ProgressPanel, notify_error, selection_table

log = logging.getLogger(__name__)

COLUMNS = ("Patient", "Date", "Study", "Series", "Modality", "Images")
MODALITIES = ("", "CT", "MR", "US", "PT", "SEG")
DEFAULT_SERVER = "http://localhost:8042/dicom-web"
SETTINGS_KEY = "pacs/server"
#: ``layer.metadata["attnseg"]`` key of a layer retrieved from the PACS: its series URL.
PACS_URL = "pacs_url"


def search_job(server: str, filters: dict[str, str]) -> Generator[Progress, None, list]:
    from ..io.pacs_query import search, server_root

    root = server_root(server)
    yield Progress(0, 1, "search", f"Searching {root}...")
    hits = search(root, **filters)
    yield Progress(1, 1, "search", f"{len(hits)} series on {root}")
    return hits


def retrieve_job(hit: Any) -> Generator[Progress, None, tuple]:
    """Fetch ``hit``'s series into the cache and read it like a local DICOM folder."""
    from ..io.dicomweb import local_path_job
    from .load import LoadConfig, read_job

    path = yield from local_path_job(hit.url)
    cfg = LoadConfig(path=str(path), series_uid=None, preset="auto", split_4d=None,
                     name=hit.label)
    vol = yield from read_job(cfg)
    return vol, cfg


def send_job(volume: Any, server: str, provenance: dict) -> Generator[Progress, None, Any]:
    from ..io.pacs_query import send_seg, server_root

    root = server_root(server)
    yield Progress(0, 1, "send", f"Writing the DICOM-SEG and storing it on {root}...")
    stored = send_seg(volume, root, provenance=provenance)
    yield Progress(1, 1, "send", "Stored")
    return stored


def _dicom_header(layer: Any) -> bool:
    header = ((getattr(layer, "metadata", None) or {}).get("attnseg") or {}).get("header") or {}
    return bool(header.get("sop_instance_uids") and header.get("frame_files"))


class PacsPanel(QWidget):
    """The PACS tab; ``load`` is the Load widget (its viewer, ``_add``)."""

    def __init__(self, load: Any, settings: QSettings | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.load = load
        self.viewer = load.viewer
        self.settings = settings if settings is not None else QSettings("napari-attnseg",
                                                                        "napari-attnseg")
        self.hits: list[Any] = []
        self.last_stored: Any = None
        self._last_source: Any = None  #: the Image layer last retrieved

        self.server_edit = QLineEdit(str(self.settings.value(SETTINGS_KEY, DEFAULT_SERVER)))
        self.server_edit.setToolTip("The server's DICOMweb root, e.g. Orthanc's "
                                    "http://HOST:8042/dicom-web")
        self.patient_edit = QLineEdit()
        self.patient_edit.setPlaceholderText("ID or name (words, or * ? wildcards)")
        self.study_edit = QLineEdit()
        self.study_edit.setPlaceholderText("StudyInstanceUID or description words")
        self.series_edit = QLineEdit()
        self.series_edit.setPlaceholderText("SeriesInstanceUID or description words")
        self.modality_combo = QComboBox()
        self.modality_combo.setEditable(True)
        self.modality_combo.addItems(MODALITIES)
        for edit in (self.server_edit, self.patient_edit, self.study_edit, self.series_edit):
            edit.returnPressed.connect(lambda: self.search())
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(lambda: self.search())

        self.table = selection_table(COLUMNS)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda *_: self.retrieve_selected())
        self.retrieve_button = QPushButton("Retrieve and open")
        self.retrieve_button.clicked.connect(lambda: self.retrieve_selected())

        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("The Labels layer to store as a DICOM-SEG")
        self.send_button = QPushButton("Send result to PACS")
        self.send_button.clicked.connect(lambda: self.send_labels())
        self.progress = ProgressPanel()
        self.runner: JobRunner | None = None

        form = QFormLayout()
        form.addRow("Server", self.server_edit)
        form.addRow("Patient", self.patient_edit)
        form.addRow("Study", self.study_edit)
        form.addRow("Series", self.series_edit)
        form.addRow("Modality", self.modality_combo)
        send_row = QHBoxLayout()
        send_row.addWidget(self.labels_combo, 1)
        send_row.addWidget(self.send_button)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.search_button)
        lay.addWidget(self.table)
        lay.addWidget(self.retrieve_button)
        lay.addLayout(send_row)
        lay.addWidget(self.progress)
        for event in ("inserted", "removed"):
            getattr(self.viewer.layers.events, event).connect(self._refresh_labels)
        self._refresh_labels()
        self._update_buttons()

    # ------------------------------------------------------------------ state
    def _busy(self) -> bool:
        return self.runner is not None and self.runner.running

    def _update_buttons(self) -> None:
        busy = self._busy()
        self.search_button.setEnabled(not busy)
        self.retrieve_button.setEnabled(not busy and self.selected_hit() is not None)
        self.send_button.setEnabled(not busy and self.labels_combo.count() > 0)

    def _refresh_labels(self, *_: Any) -> None:
        try:
            current = self.labels_combo.currentText()
        except RuntimeError:  # the tab was closed (its Qt object deleted): nothing to update
            return
        names = [ly.name for ly in self.viewer.layers if type(ly).__name__ == "Labels"]
        self.labels_combo.clear()
        self.labels_combo.addItems(names)
        if current in names:
            self.labels_combo.setCurrentText(current)
        elif names:
            self.labels_combo.setCurrentIndex(len(names) - 1)  # the newest result
        self._update_buttons()

    def selected_hit(self) -> Any:
        model = self.table.selectionModel()
        rows = model.selectedRows() if model is not None else []
        i = rows[0].row() if rows else -1
        return self.hits[i] if 0 <= i < len(self.hits) else None

    def select_row(self, index: int) -> None:
        self.table.selectRow(int(index))

    def _run(self, job: Any, on_result: Any, context: str, sync: bool) -> Any:
        self.runner = JobRunner(job, self.progress, on_result=on_result, context=context,
                                on_finished=self._update_buttons)
        if not sync:
            worker = self.runner.start()
            self._update_buttons()
            return worker
        try:
            return self.runner.run_sync()
        except Exception as exc:  # noqa: BLE001 - shown like the worker does
            self.runner._errored(exc)
            return None
        finally:
            self._update_buttons()

    # ------------------------------------------------------------------ search
    def filters(self) -> dict[str, str]:
        return {"patient": self.patient_edit.text().strip(),
                "study": self.study_edit.text().strip(),
                "series": self.series_edit.text().strip(),
                "modality": self.modality_combo.currentText().strip()}

    def search(self, sync: bool = False) -> Any:
        """Search the server with the filters (in a worker unless ``sync``)."""
        if self._busy():
            return None
        server = self.server_edit.text().strip()
        self.settings.setValue(SETTINGS_KEY, server)
        self.hits = []
        self.table.setRowCount(0)
        filters = self.filters()
        return self._run(lambda: search_job(server, filters), self._show_hits, "PACS search",
                         sync)

    def _show_hits(self, hits: list) -> None:
        self.hits = list(hits)
        self.table.setRowCount(len(self.hits))
        for r, h in enumerate(self.hits):
            date = h.study_date
            if len(date) == 8 and date.isdigit():
                date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
            who = h.patient_name.replace("^", " ").strip()
            cells = (f"{who} ({h.patient_id})" if who and h.patient_id else who or h.patient_id,
                     date, h.study_description, h.series_description, h.modality,
                     "" if h.n_instances is None else str(h.n_instances))
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(h.url)
                self.table.setItem(r, c, item)
        if self.hits:
            self.table.selectRow(0)
        self._update_buttons()

    # ------------------------------------------------------------------ retrieve
    def retrieve_selected(self, sync: bool = False) -> Any:
        """Fetch the selected series into the cache and open it (in a worker unless ``sync``)."""
        if self._busy():
            return None
        hit = self.selected_hit()
        if hit is None:
            notify_error(ValueError("no series selected: search the server first"), "PACS")
            return None
        return self._run(lambda: retrieve_job(hit), lambda res: self._opened(res, hit),
                         "PACS retrieve", sync)

    def _opened(self, result: tuple, hit: Any) -> None:
        vol, cfg = result
        self.load._add(vol, cfg)
        for layer in self.load.last_layers:
            layer.metadata.setdefault("attnseg", {})[PACS_URL] = hit.url
            if type(layer).__name__ == "Image":
                self._last_source = layer
        self.progress.status.setText(f"Opened {hit.label} ({vol.shape[0]} slices) from "
                                     f"{hit.url.split('/studies/')[0]}")

    # ------------------------------------------------------------------ send
    def _source_for(self, labels: Any) -> Any:
        """The Image layer on a DICOM series that ``labels`` was drawn on (same shape)."""
        shape = tuple(np.shape(labels.data))
        images = [ly for ly in self.viewer.layers if type(ly).__name__ == "Image"
                  and tuple(np.shape(ly.data)) == shape and _dicom_header(ly)]
        if self._last_source in images:
            return self._last_source
        return images[-1] if images else None

    def seg_input(self, labels: Any) -> tuple[Any, dict]:
        """(stored-order label volume carrying the DICOM header, provenance) for ``labels``
        (GUI thread: the data are copied)."""
        from .._napari.label_style import label_metadata_from_layer
        from .._napari.layers import layer_to_source_volume

        data = np.array(labels.data, copy=True)
        if data.ndim not in (2, 3) or data.dtype.kind not in "iub":
            raise ValueError(f"layer '{labels.name}' is not a 2D/3D integer Labels layer")
        state = labels.as_layer_data_tuple()[1]
        provenance = {"layer_name": labels.name, **label_metadata_from_layer(state, data)}
        if _dicom_header(labels):
            vol = layer_to_source_volume(labels, data)
        else:
            source = self._source_for(labels)
            if source is None:
                raise ValueError(f"layer '{labels.name}' is not on a DICOM series' grid: "
                                 "retrieve the scan from the PACS (or open a DICOM folder) "
                                 "and segment or draw on it")
            vol = layer_to_source_volume(source, data)
        return replace(vol, is_labels=True), provenance

    def send_labels(self, layer: Any = None, sync: bool = False) -> Any:
        """Store ``layer`` (default: the chosen Labels layer) on the server as a DICOM-SEG."""
        if self._busy():
            return None
        try:
            if layer is None:
                name = self.labels_combo.currentText()
                if not name or name not in self.viewer.layers:
                    raise ValueError("no Labels layer to send: segment or draw one first")
                layer = self.viewer.layers[name]
            volume, provenance = self.seg_input(layer)
        except ValueError as exc:
            notify_error(exc, "Send to PACS")
            return None
        server = self.server_edit.text().strip()
        self.settings.setValue(SETTINGS_KEY, server)
        return self._run(lambda: send_job(volume, server, provenance), self._sent,
                         "Send to PACS", sync)

    def _sent(self, stored: Any) -> None:
        self.last_stored = stored
        self.progress.status.setText(f"Stored DICOM-SEG SOPInstanceUID {stored.sop_instance_uid} "
                                     f"on {stored.url.split('/studies/')[0]}")
