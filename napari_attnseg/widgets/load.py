"""Load scan widget: pick a file or folder, see its series, choose one, its modality and (for
2D images) the pixel size.

Flow: ``set_path`` (or the File... / Folder... buttons, or Enter in the path field) lists the
series with :func:`napari_attnseg.io.list_series` (headers only where the format allows) in a
worker, with what the headers say about the modality
(:func:`napari_attnseg.io.modality.detect_modality` without the pixel data); selecting a row
previews its geometry. The *Modality* row is "auto" by default: the reader then detects it
(DICOM Modality tag, sidecar, description, HU range, file name) and the summary says what it
found and where; CT / MR / US / unknown override it. "Open" reads the series in a
:class:`~napari_attnseg.widgets._worker.JobRunner` (off the GUI thread) and adds the layer with
the modality in ``metadata["attnseg"]["modality"]``. The geometry summary (spacing in (z, y, x)
or (y, x), orientation, anisotropy, warnings) comes from :meth:`Volume.geometry_summary` once
read. Errors become notifications with the message. The *PACS* tab
(:class:`~napari_attnseg.widgets._load_pacs.PacsPanel`, ``self.pacs``) searches a DICOMweb server,
retrieves a series into the local cache and opens it the same way, and sends a Labels layer
back as a DICOM-SEG.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from qtpy.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                            QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from .._progress import Progress
from ._form import build_form
from ._worker import JobRunner, ProgressPanel, notify_error, selection_table

log = logging.getLogger(__name__)

#: The modality row: "auto" = what the file says (detected when read); "unknown" = none.
PRESETS = ("auto", "CT", "MR", "US", "unknown")
COLUMNS = ("Description", "Modality", "Size", "Spacing (mm)", "Slices")
AUTO_PIXEL_TEXT = "auto (CSV beside the images, else 1 mm)"


@dataclass(frozen=True)
class LoadParams:
    """The form's options (built with :func:`~._form.build_form`); the file and the series are
    picked above it."""

    modality: Literal["auto", "CT", "MR", "US", "unknown"] = field(default="auto", metadata={
        "label": "Modality", "tooltip": "auto: what the file says (DICOM tag, sidecar, "
        "description, HU range, file name); or set it. It chooses the model."})
    pixel_size_mm: Annotated[float, {"min": 0.0, "max": 100.0, "step": 0.01, "decimals": 4}] = \
        field(default=0.0, metadata={"label": "Pixel size", "tooltip": "Pixel size of a 2D image "
                                     "(PNG, JPEG, TIFF carry none); 0 = auto"})
    volume: Annotated[int, {"min": -1, "max": 9999}] = field(default=-1, metadata={
        "label": "4D volume", "tooltip": "Index of the volume to open from a 4D file "
        "(-1: the file is 3D)"})


@dataclass(frozen=True)
class LoadConfig:
    """Everything the read job needs, snapshotted on the GUI thread."""

    path: str
    series_uid: str | None
    preset: str  #: "auto", "CT", "MR", "US" or "unknown"
    split_4d: int | None
    name: str
    pixel_size_mm: float | None = None  #: 2D images (None: the CSV beside them, else 1 mm)


@dataclass(frozen=True)
class Listing:
    """What :func:`list_job` found: the series and the modality the headers state."""

    path: str
    series: list
    guess: Any  #: ModalityGuess (from headers and names only)
    is_2d_image: bool


def list_job(path: str) -> Generator[Progress, None, Listing]:
    """List the series of ``path`` (a progress generator for the worker)."""
    from .. import io
    from ..io.modality import detect_modality

    yield Progress(0, 1, "list", f"Reading {Path(path).name}...")
    series = io.list_series(path)
    if not series:
        raise ValueError(f"{path}: no readable series found")
    fmt = io.detect_format(path)
    guess = detect_modality(None, path, use_data=False)
    yield Progress(1, 1, "list", f"{len(series)} series in {Path(path).name}")
    return Listing(str(path), list(series), guess, fmt == "image")


def read_job(cfg: LoadConfig) -> Generator[Progress, None, Any]:
    """Read one series (a progress generator for the worker); returns the Volume."""
    from .. import io

    yield Progress(0, 1, "read", f"Reading {Path(cfg.path).name}...")
    modality = None if cfg.preset in ("auto", "") else ("" if cfg.preset == "unknown"
                                                        else cfg.preset)
    vol = io.read_volume(cfg.path, cfg.series_uid, split_4d=cfg.split_4d,
                         pixel_size_mm=cfg.pixel_size_mm, modality=modality)
    yield Progress(1, 1, "read", f"Read {Path(cfg.path).name}")
    return vol


def format_summary(summary: dict[str, Any], header: dict | None = None) -> str:
    """Human-readable lines from :meth:`Volume.geometry_summary` (and the volume's header:
    where the modality, anatomy and pixel size came from)."""
    header = header or {}
    shape_v = summary.get("shape", [])
    axes = "(y, x)" if len(shape_v) == 2 else "(z, y, x)"
    shape = " x ".join(str(s) for s in shape_v)
    spacing = " x ".join(f"{s:g}" for s in summary.get("spacing_mm", []))
    lines = [f"Size: {shape} {'pixels' if len(shape_v) == 2 else 'voxels'} {axes}",
             f"Spacing: {spacing} mm {axes}"]
    source = header.get("pixel_size_source")
    if source:
        lines[-1] += {"assumed": " (assumed: no pixel size known)",
                      "given": " (given)"}.get(source, f" (from {source})")
    if len(shape_v) != 2:
        orient = summary.get("orientation") or "-"
        aligned = "" if summary.get("axis_aligned", True) else " (oblique)"
        lines.append(f"Orientation: {orient}{aligned}")
    aniso = float(summary.get("anisotropy", 1.0))
    lines.append(f"Anisotropy: {aniso:.2f}" + (" (strongly anisotropic)" if aniso > 3 else ""))
    modality = summary.get("modality")
    where = header.get("modality_source")
    lines.append(f"Modality: {modality}" + (f" (from {where})" if where and
                                            where != "set by the user" else
                                            " (set by you)" if where else "")
                 if modality else "Modality: unknown (set it to choose a model)")
    if header.get("anatomy"):
        lines.append(f"Anatomy: {header['anatomy']}")
    for w in summary.get("warnings", []):
        lines.append(f"Warning: {w}")
    return "\n".join(lines)


class LoadWidget(QWidget):
    """Open a scan: file or folder, series table, modality, pixel size, geometry summary."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.series: list[Any] = []
        self.listing: Listing | None = None
        self.last_volume = None
        self.last_layers: list[Any] = []

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("NIfTI / NRRD / DICOM / PNG file or DICOM folder")
        self.path_edit.returnPressed.connect(lambda: self.set_path(self.path_edit.text()))
        self.file_button = QPushButton("File...")
        self.file_button.clicked.connect(self._pick_file)
        self.folder_button = QPushButton("Folder...")
        self.folder_button.clicked.connect(self._pick_folder)

        self.table = selection_table(COLUMNS)
        self.table.itemSelectionChanged.connect(self._on_select)

        self.form = build_form(LoadParams, labels=True)
        # Qt handles (scripts, tests); the pixel size's special text says what 0 means
        self.preset_combo = self.form.modality.native
        self.pixel_spin = self.form.pixel_size_mm.native
        self.pixel_spin.setSuffix(" mm")
        self.pixel_spin.setSpecialValueText(AUTO_PIXEL_TEXT)
        self.pixel_spin.setEnabled(False)
        self.volume_spin = self.form.volume.native  # (superqt's spin box: no special text)
        self.summary_label = QLabel("Pick a file or folder.")
        self.summary_label.setWordWrap(True)
        self.open_button = QPushButton("Open")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(lambda: self.open_selected())
        self.progress = ProgressPanel()
        self.runner: JobRunner | None = None
        self.list_runner: JobRunner | None = None

        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.file_button)
        row.addWidget(self.folder_button)
        files = QWidget()
        lay = QVBoxLayout(files)
        lay.addLayout(row)
        lay.addWidget(self.table)
        lay.addWidget(self.form.native)
        lay.addWidget(self.summary_label)
        lay.addWidget(self.open_button)
        lay.addWidget(self.progress)
        lay.addStretch(1)
        from ._load_pacs import PacsPanel

        self.pacs = PacsPanel(self)
        self.tabs = QTabWidget()
        self.tabs.addTab(files, "Files")
        self.tabs.addTab(self.pacs, "PACS")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.tabs)

    # ------------------------------------------------------------------ choosing
    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open scan", "", "Scans (*.nii *.nii.gz *.nrrd *.nhdr *.dcm *.DCM *.ima *.IMA "
                                   "*.png *.jpg *.jpeg *.tif *.tiff);;All files (*)")
        if path:
            self.set_path(path)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open DICOM folder")
        if path:
            self.set_path(path)

    def set_path(self, path: str | Path, sync: bool = False) -> Any:
        """List the series of ``path`` into the table, in a worker (the GUI stays responsive
        while a DICOM folder is scanned); returns the runner. With ``sync`` (tests, scripts)
        it runs here and returns True, or False (with a notification) on failure."""
        path = str(path)
        self.path_edit.setText(path)
        self.series, self.listing = [], None
        self.pixel_spin.setValue(0.0)  # pixel sizes differ per image (HC18): auto again
        self.table.setRowCount(0)
        self.open_button.setEnabled(False)
        self.summary_label.setText(f"Reading {Path(path).name}...")
        if self.list_runner is not None and self.list_runner.running:
            self.list_runner.cancel()
        runner = JobRunner(lambda: list_job(path), self.progress, context="Load scan",
                           on_result=self._show_listing,
                           on_error=lambda exc: self.summary_label.setText(f"Cannot open: {exc}"))
        self.list_runner = runner
        if not sync:
            return runner.start()
        try:
            runner.run_sync()
        except Exception as exc:  # noqa: BLE001 - every failure reaches the user as a message
            runner._errored(exc)
        return runner.error is None and bool(self.series)

    def _show_listing(self, listing: Listing) -> None:
        if listing.path != self.path_edit.text():  # another path was chosen meanwhile
            return
        self.listing, self.series = listing, list(listing.series)
        self.pixel_spin.setEnabled(listing.is_2d_image)
        self.table.setRowCount(len(self.series))
        for r, s in enumerate(self.series):
            modality = s.modality or listing.guess.modality or "?"
            cells = (s.description or s.uid, modality,
                     " x ".join(str(v) for v in s.shape),
                     " x ".join(f"{v:.3g}" for v in s.spacing), str(s.n_slices))
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(s.uid)
                self.table.setItem(r, c, item)
        self.table.selectRow(0)
        self._on_select()

    def selected_index(self) -> int:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return rows[0].row() if rows else (0 if self.series else -1)

    def select_series(self, index: int) -> None:
        """Select table row ``index`` (tests and scripts)."""
        self.table.selectRow(int(index))
        self._on_select()

    def _auto_text(self, s: Any) -> str:
        """What "auto" will use, as far as the headers tell before reading."""
        from ..io.modality import normalize_modality

        if normalize_modality(s.modality):
            return f"auto: {normalize_modality(s.modality)} (DICOM Modality tag)"
        guess = self.listing.guess if self.listing is not None else None
        if guess is not None and guess.modality:
            return f"auto: {guess.modality} (from {guess.source})"
        return "auto (detected when opened)"

    def _on_select(self) -> None:
        i = self.selected_index()
        if not 0 <= i < len(self.series):
            return
        s = self.series[i]
        self.preset_combo.setItemText(0, self._auto_text(s))
        self.preset_combo.setCurrentIndex(0)  # what the file says, until the user sets it
        is_4d = "4D" in (s.description or "")
        self.volume_spin.setValue(0 if is_4d else -1)
        aniso = max(s.spacing) / min(s.spacing) if s.spacing and min(s.spacing) > 0 else 1.0
        guess = self.listing.guess if self.listing is not None else None
        modality = s.modality or (guess.modality if guess is not None else "")
        preview = {"shape": list(s.shape), "spacing_mm": list(s.spacing), "orientation": "",
                   "anisotropy": aniso, "modality": modality}
        header = {"modality_source": "the DICOM Modality tag" if s.modality else
                  (guess.source if guess is not None else "")}
        self.summary_label.setText(format_summary(preview, header)
                                   + "\n(orientation and modality checked when opened)")
        self.open_button.setEnabled(True)

    # ------------------------------------------------------------------ opening
    def preset(self) -> str:
        """"auto", "CT", "MR", "US" or "unknown" (the first item's text carries the guess)."""
        return "auto" if self.preset_combo.currentIndex() == 0 else self.preset_combo.currentText()

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
        pixel = self.pixel_spin.value() if self.pixel_spin.isEnabled() else 0.0
        return LoadConfig(path=path, series_uid=s.uid if multi else None, preset=self.preset(),
                          split_4d=None if spin < 0 else spin, name=name,
                          pixel_size_mm=pixel if pixel > 0 else None)

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
        from .._napari.display import ensure_display

        ensure_display(self.viewer)  # radiological display and orientation letters
        self.last_volume = vol
        self.last_layers = [layer]
        self.summary_label.setText(format_summary(vol.geometry_summary(), dict(vol.header)))
        for w in vol.warnings:
            show_warning(f"{Path(cfg.path).name}: {w}")
