"""Load scan widget: pick a file or folder, see its series, choose one and a modality preset.

Flow: ``set_path`` (or the File... / Folder... buttons) lists the series with
:func:`napari_attnseg.io.list_series` (headers only) into :attr:`LoadWidget.table`; selecting a
row sets :attr:`LoadWidget.preset_combo` from the series' modality and previews its geometry;
"Open" reads the series in a :class:`~napari_attnseg.widgets._worker.JobRunner` (off the GUI
thread) and adds the layer with the chosen preset in ``metadata["attnseg"]["modality"]``. The
geometry summary (spacing, orientation, anisotropy, warnings) comes from
:meth:`Volume.geometry_summary` once read. Errors become notifications with the message.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QFormLayout,
                            QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPushButton, QSpinBox,
                            QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from .._progress import Progress
from ._worker import JobRunner, ProgressPanel, notify_error

log = logging.getLogger(__name__)

PRESETS = ("CT", "MR", "US")
COLUMNS = ("Description", "Modality", "Size", "Spacing (mm)", "Slices")


@dataclass(frozen=True)
class LoadConfig:
    """Everything the read job needs, snapshotted on the GUI thread."""

    path: str
    series_uid: str | None
    preset: str
    split_4d: int | None
    name: str


def read_job(cfg: LoadConfig) -> Generator[Progress, None, Any]:
    """Read one series (a progress generator for the worker); returns the Volume."""
    from .. import io

    yield Progress(0, 1, "read", f"Reading {Path(cfg.path).name}...")
    vol = io.read_volume(cfg.path, cfg.series_uid, split_4d=cfg.split_4d)
    vol = replace(vol, modality=cfg.preset)
    yield Progress(1, 1, "read", f"Read {Path(cfg.path).name}")
    return vol


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable lines from :meth:`Volume.geometry_summary`."""
    shape = " x ".join(str(s) for s in summary.get("shape", []))
    spacing = " x ".join(f"{s:g}" for s in summary.get("spacing_mm", []))
    lines = [f"Size: {shape} voxels", f"Spacing: {spacing} mm (z, y, x)"]
    orient = summary.get("orientation") or "-"
    aligned = "" if summary.get("axis_aligned", True) else " (oblique)"
    lines.append(f"Orientation: {orient}{aligned}")
    aniso = float(summary.get("anisotropy", 1.0))
    lines.append(f"Anisotropy: {aniso:.2f}" + (" (strongly anisotropic)" if aniso > 3 else ""))
    if summary.get("modality"):
        lines.append(f"Modality: {summary['modality']}")
    for w in summary.get("warnings", []):
        lines.append(f"Warning: {w}")
    return "\n".join(lines)


class LoadWidget(QWidget):
    """Open a scan: file or folder, series table, modality preset, geometry summary."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.series: list[Any] = []
        self.last_volume = None
        self.last_layers: list[Any] = []

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("NIfTI / NRRD / DICOM file or DICOM folder")
        self.path_edit.returnPressed.connect(lambda: self.set_path(self.path_edit.text()))
        self.file_button = QPushButton("File...")
        self.file_button.clicked.connect(self._pick_file)
        self.folder_button = QPushButton("Folder...")
        self.folder_button.clicked.connect(self._pick_folder)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._on_select)

        self.preset_combo = QComboBox()
        self.preset_combo.addItems(PRESETS)
        self.volume_spin = QSpinBox()  # 4D files: which volume; -1 = not 4D
        self.volume_spin.setRange(-1, 9999)
        self.volume_spin.setValue(-1)
        self.volume_spin.setSpecialValueText("(3D)")
        self.volume_spin.setToolTip("Index of the volume to open from a 4D file")
        self.summary_label = QLabel("Pick a file or folder.")
        self.summary_label.setWordWrap(True)
        self.open_button = QPushButton("Open")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(lambda: self.open_selected())
        self.progress = ProgressPanel()
        self.runner: JobRunner | None = None

        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.file_button)
        row.addWidget(self.folder_button)
        form = QFormLayout()
        form.addRow("Preset", self.preset_combo)
        form.addRow("4D volume", self.volume_spin)
        lay = QVBoxLayout(self)
        lay.addLayout(row)
        lay.addWidget(self.table)
        lay.addLayout(form)
        lay.addWidget(self.summary_label)
        lay.addWidget(self.open_button)
        lay.addWidget(self.progress)
        lay.addStretch(1)

    # ------------------------------------------------------------------ choosing
    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open scan", "", "Scans (*.nii *.nii.gz *.nrrd *.nhdr *.dcm *.DCM *.ima *.IMA);;"
                                   "All files (*)")
        if path:
            self.set_path(path)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open DICOM folder")
        if path:
            self.set_path(path)

    def set_path(self, path: str | Path) -> bool:
        """List the series of ``path`` in the table; False (with a notification) on failure."""
        from .. import io

        path = str(path)
        self.path_edit.setText(path)
        self.series = []
        self.table.setRowCount(0)
        self.open_button.setEnabled(False)
        try:
            series = io.list_series(path)
        except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a message
            self.summary_label.setText(f"Cannot open: {exc}")
            notify_error(exc, "Load scan")
            return False
        if not series:
            self.summary_label.setText(f"No readable series in {path}")
            notify_error(ValueError(f"{path}: no readable series found"), "Load scan")
            return False
        self.series = list(series)
        self.table.setRowCount(len(series))
        for r, s in enumerate(series):
            cells = (s.description or s.uid, s.modality or "?",
                     " x ".join(str(v) for v in s.shape),
                     " x ".join(f"{v:.3g}" for v in s.spacing), str(s.n_slices))
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(s.uid)
                self.table.setItem(r, c, item)
        self.table.selectRow(0)
        self._on_select()
        return True

    def selected_index(self) -> int:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return rows[0].row() if rows else (0 if self.series else -1)

    def select_series(self, index: int) -> None:
        """Select table row ``index`` (tests and scripts)."""
        self.table.selectRow(int(index))
        self._on_select()

    def _on_select(self) -> None:
        i = self.selected_index()
        if not 0 <= i < len(self.series):
            return
        s = self.series[i]
        if s.modality in PRESETS:
            self.preset_combo.setCurrentText(s.modality)
        is_4d = "4D" in (s.description or "")
        self.volume_spin.setValue(0 if is_4d else -1)
        aniso = max(s.spacing) / min(s.spacing) if s.spacing and min(s.spacing) > 0 else 1.0
        preview = {"shape": list(s.shape), "spacing_mm": list(s.spacing), "orientation": "",
                   "anisotropy": aniso, "modality": s.modality}
        self.summary_label.setText(format_summary(preview) + "\n(orientation shown after Open)")
        self.open_button.setEnabled(True)

    # ------------------------------------------------------------------ opening
    def config(self) -> LoadConfig:
        """Snapshot the widget state (GUI thread)."""
        from .._napari.reader import layer_name

        i = self.selected_index()
        if not 0 <= i < len(self.series):
            raise ValueError("no series selected: pick a file or folder first")
        s = self.series[i]
        path = self.path_edit.text()
        multi = len(self.series) > 1
        name = layer_name(path) + (f" [{s.description or s.uid}]" if multi else "")
        spin = self.volume_spin.value()
        return LoadConfig(path=path, series_uid=s.uid if multi else None,
                          preset=self.preset_combo.currentText(),
                          split_4d=None if spin < 0 else spin, name=name)

    def open_selected(self, sync: bool = False) -> Any:
        """Read the selected series and add its layer; in a worker unless ``sync``."""
        try:
            cfg = self.config()
        except ValueError as exc:
            notify_error(exc, "Load scan")
            return None
        self.runner = JobRunner(lambda: read_job(cfg), self.progress,
                                on_result=lambda vol: self._add(vol, cfg),
                                on_finished=lambda: self.open_button.setEnabled(True),
                                context="Load scan")
        self.open_button.setEnabled(False)
        if sync:
            try:
                return self.runner.run_sync()
            except Exception as exc:  # noqa: BLE001 - shown like the worker does
                self.runner._errored(exc)
                return None
            finally:
                self.open_button.setEnabled(True)
        return self.runner.start()

    def _add(self, vol: Any, cfg: LoadConfig) -> None:
        from napari.utils.notifications import show_warning

        from .._napari.layers import layer_data_tuple

        data, kwargs, kind = layer_data_tuple(vol, name=cfg.name)
        layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        self.last_volume = vol
        self.last_layers = [layer]
        self.summary_label.setText(format_summary(vol.geometry_summary()))
        for w in vol.warnings:
            show_warning(f"{Path(cfg.path).name}: {w}")
