"""The Segment widget's model side, kept off the widget module:

* :class:`ModelPicker`: the model list (registry versions and browsed folders), preselected
  with :func:`napari_attnseg.model.choose.choose_model` (the rule ``attnseg predict`` uses) for
  the image's modality and anatomy, unless the user picked a model; a "no fitting model" entry
  when nothing fits;
* :func:`image_facts`: the image's modality/anatomy as the layer's metadata (or the widget's
  modality choice) says;
* :class:`ModelCache`: loaded models, filled on the compute thread (never the GUI thread);
* :class:`SegmentParams` (the options form), :class:`SegmentOptions` and :func:`plan_info`:
  the info line's plan (windows, device), computed in a worker because it loads the model and
  imports torch.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from qtpy.QtWidgets import QComboBox, QFileDialog, QWidget

from .._napari.layers import META_KEY
from ..errors import ModelError
from ..io.modality import normalize_anatomy, normalize_modality
from ..model.choose import (NO_MODEL_TEXT, ModelChoice, ModelInfo, choose_model, mismatch,
                            model_info)

logger = logging.getLogger(__name__)

BROWSE = "Browse folder..."
NO_FIT = "(no fitting model: choose one)"
MODALITY_CHOICES = ("auto", "CT", "MR", "US")

__all__ = ["BROWSE", "NO_FIT", "NO_MODEL_TEXT", "ImageFacts", "ModelCache", "ModelPicker",
           "SegmentOptions", "SegmentParams", "image_facts", "model_note", "plan_info",
           "plan_key", "read_registry"]


@dataclass(frozen=True)
class ImageFacts:
    """The modality ("" unknown), where it came from, and the anatomy ("" unknown)."""

    modality: str = ""
    source: str = ""
    anatomy: str = ""

    def describe(self) -> str:
        if not self.modality:
            return "modality unknown"
        text = self.modality + (f" ({self.source})" if self.source else "")
        return text + (f", {self.anatomy}" if self.anatomy else "")


def image_facts(layer: Any, override: str | None = None) -> ImageFacts:
    """What the layer's metadata says (the plugin's readers fill it: ``modality``,
    ``header["modality_source"]``, ``header["anatomy"]``; phantoms from the sample data are
    "phantom"); ``override`` is the user's choice in the widget."""
    meta = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    meta = meta if isinstance(meta, dict) else {}
    header = meta.get("header") if isinstance(meta.get("header"), dict) else {}
    prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    anatomy = normalize_anatomy(header.get("anatomy") or prov.get("anatomy")
                                or ("phantom" if prov.get("phantom") else ""))
    if override:
        return ImageFacts(normalize_modality(override), "set here", anatomy)
    modality = normalize_modality(meta.get("modality"))
    source = str(header.get("modality_source") or "") if modality else ""
    return ImageFacts(modality, source.removeprefix("the "), anatomy)


def model_note(folder: Path | None, facts: ImageFacts) -> str:
    """"" when the model fits the image, else the problem ("model is CT, image looks MR")."""
    if folder is None:
        return ""
    return mismatch(model_info(folder), facts.modality, facts.anatomy)


@dataclass(frozen=True)
class SegmentParams:
    """The form's inference options (built with :func:`~._form.build_form`); the image, its
    modality and the model are picked above it."""

    overlap: Annotated[float, {"min": 0.0, "max": 0.9, "step": 0.05}] = field(
        default=0.5, metadata={"label": "overlap", "tooltip": "fraction by which neighbouring "
                               "windows overlap (blended)"})
    tta: Literal["model default", "on", "off"] = field(default="model default", metadata={
        "label": "mirror TTA", "tooltip": "mirror test-time augmentation (4 flips of each slice "
        "averaged: ~4x the time); 'model default': what the model declares (its card says why)"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"label": "device"})
    precision: Literal["auto", "fp32", "amp", "bf16"] = field(
        default="auto", metadata={"label": "precision", "tooltip": "auto: bf16 on a CPU with "
                                  "native bf16 (AMX, AVX512-BF16), fp32 elsewhere"})
    window: Literal["auto", "slice", "patch"] = field(default="auto", metadata={
        "label": "window",
        "tooltip": "2D models: 'slice' runs each whole slice as one window (fastest); 'patch' "
                   "uses the model's training patch with Gaussian-blended overlap; 'auto' = "
                   "slice unless huge"})

    def options(self) -> SegmentOptions:
        kw = asdict(self)
        kw["tta"] = {"on": True, "off": False}.get(self.tta)  # "model default": None
        return SegmentOptions(**kw)


@dataclass(frozen=True)
class SegmentOptions:
    """The inference options of the form (plain values: snapshot on the GUI thread; the
    torch-side :class:`~napari_attnseg.inference.predictor.PredictConfig` is built in the job)."""

    overlap: float = 0.5
    tta: bool | None = None  #: None: the model's declared default
    device: str = "auto"
    precision: str = "auto"
    window: str = "auto"
    modality: str | None = None  #: intensity preset override (None: the model's own)

    def predict_config(self) -> Any:
        from ..inference.predictor import PredictConfig

        return PredictConfig(overlap=self.overlap, tta=self.tta, device=self.device,
                             precision=self.precision, modality=self.modality,
                             window=self.window)


def plan_info(model: Any, volume: Any, options: SegmentOptions) -> tuple[str, bool]:
    """(info text, runnable) for the info line: windows, device, memory plan (compute thread)."""
    from ..inference.device import device_summary, select_device
    from ..inference.predictor import (effective_tta, input_warnings, plan_prediction, rescale_note,
                                       tta_note)

    cfg = options.predict_config()
    device = select_device(cfg.device)
    plan = plan_prediction(model, volume, cfg, device=device)
    if plan.decision == "refuse":
        return f"cannot run: {plan.message}", False
    text = "".join(f"Warning: the image is {w}. " for w in input_warnings(model, volume, cfg))
    text += f"{plan.message}. Device: {device_summary(device)}."
    rescale = rescale_note(model, volume)
    if rescale:
        text += f" {rescale[0].upper()}{rescale[1:]}."
    note = tta_note(model, cfg)
    if note:
        text += f" {note[0].upper()}{note[1:]}."
    if effective_tta(model, cfg):
        text += (" Mirror TTA on" + (" (the model's default)" if cfg.tta is None else "")
                 + ": ~4x the time.")
    views = getattr(model, "views", ()) or ()
    if views and getattr(volume, "ndim", 0) == 3:
        text += (f" Averages {len(views)} more view{'s' if len(views) > 1 else ''} "
                 f"({', '.join(v.spec.name for v, _, _ in views)}) over the whole volume; "
                 "the slice preview is the model alone.")
    if device.type == "cpu":
        text += " Running on CPU: slower."
    return text, True


def plan_key(layer: Any, folder: Path, facts: ImageFacts, options: SegmentOptions) -> tuple:
    """What the info line's plan depends on (cheap, GUI thread): the model folder and its files'
    stamps, the image layer's data (identity, shape) and geometry, its modality and the options.
    The same key gives the same plan: adding result layers or finishing a run does not re-plan."""
    data = layer.data
    affine = getattr(getattr(layer, "affine", None), "affine_matrix", None)
    return (str(folder), ModelCache._stamp(folder), layer.name, id(data),
            tuple(getattr(data, "shape", ())), tuple(float(v) for v in layer.scale),
            None if affine is None else affine.tobytes(), facts, options)


class ModelCache:
    """Loaded models by folder, reloaded when config.json or the weights change. A failed load
    is remembered too (its error is re-raised until the files change). Thread-safe; :meth:`load`
    runs wherever it is called: call it on the compute thread, never the GUI thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[tuple, Any, BaseException | None]] = {}

    @staticmethod
    def _stamp(folder: Path) -> tuple:
        out = []
        for name in ("config.json", "weights.pt"):
            try:
                out.append((folder / name).stat().st_mtime_ns)
            except OSError:
                out.append(0)
        return tuple(out)

    def cached(self, folder: Path) -> tuple[bool, Any]:
        """(known, model); a remembered failure raises its error."""
        with self._lock:
            hit = self._entries.get(str(folder))
        if hit is None or hit[0] != self._stamp(folder):
            return False, None
        if hit[2] is not None:
            raise hit[2]
        return True, hit[1]

    def check(self, folder: Path, volume: Any) -> None:
        """The input checks with fix-it messages, here and now when they are cheap (the model
        already loaded, e.g. by the info line; a remembered failed load raises); otherwise the
        job does them first."""
        import sys

        known, model = self.cached(folder)
        if known and "napari_attnseg.inference.predictor" in sys.modules:
            from ..inference.predictor import as_volume

            as_volume(model, volume)

    def load(self, folder: Path) -> Any:
        known, model = self.cached(folder)
        if known:
            return model
        from ..model.checkpoint import load_model

        stamp = self._stamp(folder)
        try:
            model = load_model(folder)
        except Exception as exc:
            with self._lock:
                self._entries[str(folder)] = (stamp, None, exc)
            raise
        with self._lock:
            self._entries[str(folder)] = (stamp, model, None)
        return model


class _RefreshingComboBox(QComboBox):
    """A combo box that refreshes its items just before its list opens."""

    def __init__(self, refresh: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self._refresh = refresh

    def showPopup(self) -> None:  # noqa: N802 (Qt API)
        self._refresh()
        super().showPopup()


def read_registry(registry: Any) -> tuple[list, list[ModelInfo], dict[str, str]]:
    """(every listed version, one :class:`ModelInfo` per name that resolves, {name: problem}).
    A name whose ``active.json`` is corrupt or names a missing version (``ModelError``, the
    message says how to fix it) is left out of the automatic choice and reported instead of
    raising, so one broken model never makes the whole list fail; its versions stay listed
    (each is a complete folder the user may pick)."""
    try:
        entries = registry.list_models()
    except (OSError, ModelError) as exc:
        return [], [], {"registry": f"the model registry {registry.root} cannot be read: {exc}"}
    infos: list[ModelInfo] = []
    problems: dict[str, str] = {}
    for name in dict.fromkeys(e.name for e in entries):
        try:
            e = registry.get(name)
        except (OSError, ModelError) as exc:
            problems[name] = str(exc)
            logger.warning("model '%s' skipped: %s", name, exc)
            continue
        infos.append(model_info(e.path, name=e.name, version=e.version, shipped=e.shipped))
    return entries, infos, problems


class ModelPicker:
    """The model combo box and its preselection; ``facts()`` gives the current image's
    :class:`ImageFacts`, ``changed()`` is called after a change made here. ``problems``:
    models of the registry that could not be resolved ({name: message}), shown in the info
    line (:meth:`problem_text`) and once as a notification."""

    def __init__(self, parent: QWidget, facts: Any, changed: Any):
        self._parent = parent
        self._facts = facts
        self._changed = changed
        self.combo = _RefreshingComboBox(lambda: self.refresh())
        self.picked = False  #: the user chose a model: no preselection by modality
        self.browsed: list[Path] = []  #: model folders picked with "Browse folder..."
        self.choice: ModelChoice | None = None  #: the last automatic choice
        self.models: list[ModelInfo] = []  #: the names that resolve, as of the last refresh
        self.problems: dict[str, str] = {}  #: {model name: why it was skipped}
        self._notified: set[str] = set()
        self.combo.activated.connect(self._on_activated)

    def folder(self) -> Path | None:
        data = self.combo.currentData()
        return Path(data) if data else None

    def refresh(self) -> None:
        """Re-read the registry (a version a fine-tune just saved appears). The user's choice
        is kept; otherwise the model :func:`choose_model` picks for the image is selected (a
        fine-tuned version once it is active), or the "no fitting model" entry."""
        from ..model.registry import ModelRegistry

        previous, known = self.combo.currentData(), self.problems
        entries, self.models, self.problems = read_registry(ModelRegistry())
        combo = self.combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(NO_FIT, None)
        for e in entries:
            info = model_info(e.path, name=e.name, version=e.version, shipped=e.shipped)
            tag = " (shipped)" if e.shipped else ""
            combo.addItem(f"{e.ref}{tag}: {info.describe()}", str(e.path))
        for folder in self.browsed:
            if combo.findData(str(folder)) < 0:
                combo.addItem(folder.name, str(folder))
        combo.addItem(BROWSE, None)
        idx = combo.findData(previous) if previous else -1
        if self.picked and idx > 0:
            combo.setCurrentIndex(idx)
        else:
            self.picked = False
            self._select_choice()
        combo.blockSignals(False)
        self._notify_problems()
        if combo.currentData() != previous or self.problems != known:
            self._changed()

    def _notify_problems(self) -> None:
        """A notification per newly broken model (not again at every refresh)."""
        new = {m for m in self.problems.values() if m not in self._notified}
        if not new:
            return
        self._notified |= new
        try:
            from napari.utils.notifications import show_warning
        except ImportError:  # pragma: no cover - napari is a dependency of the widgets
            return
        for message in sorted(new):
            show_warning(f"Segment: model skipped: {message}")

    def problem_text(self) -> str:
        """"" or "model 'x' skipped: <why>. " for the info line."""
        return "".join(f"model '{name}' skipped: {message}. " if name != "registry"
                       else f"{message}. " for name, message in self.problems.items())

    def _select_choice(self) -> None:
        facts = self._facts()
        self.choice = choose_model(facts.modality, facts.anatomy, models=self.models)
        idx = self.combo.findData(str(self.choice.path)) if self.choice.path else -1
        self.combo.setCurrentIndex(max(idx, 0))

    def preselect(self) -> None:
        """Select the model for the current image unless the user picked one."""
        if self.picked:
            return
        before = self.combo.currentData()
        self.combo.blockSignals(True)
        self._select_choice()
        self.combo.blockSignals(False)
        if self.combo.currentData() != before:
            self._changed()

    def no_model_text(self) -> str:
        """Why no model is selected (the chooser's message, or how to get one)."""
        if self.combo.count() <= 2:
            return NO_MODEL_TEXT
        if self.choice is not None and self.choice.info is None:
            return self.choice.message
        return "choose a model"

    def set_folder(self, folder: str | Path) -> None:
        """Add a model folder (from "Browse folder..." or a script) and select it."""
        self.picked = True
        folder = Path(folder)
        if folder not in self.browsed:
            self.browsed.append(folder)
        idx = self.combo.findData(str(folder))
        if idx < 0:
            self.combo.insertItem(self.combo.count() - 1, folder.name, str(folder))
            idx = self.combo.findData(str(folder))
        self.combo.setCurrentIndex(idx)

    def _on_activated(self, index: int) -> None:
        if self.combo.itemText(index) != BROWSE:
            # a choice by the user (activated = user interaction); the "no fitting model"
            # entry hands the choice back to the automatic rule
            self.picked = self.combo.itemData(index) is not None
            if not self.picked:
                self.preselect()
            return
        folder = QFileDialog.getExistingDirectory(self._parent, "Choose a model folder")
        if folder:
            self.set_folder(folder)
            self._changed()
        else:
            self.combo.setCurrentIndex(max(0, index - 1))
