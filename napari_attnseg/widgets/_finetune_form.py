"""The Fine-tune widget's form and layout: the pickers (image; labels = corrected labels or
scribbles, with the mode stated), the pairs, base model, budget and training options, the
reviewed slices, Train / Stop, the progress panel and loss plot, the result line, re-segment and
"What to correct next". Builds the Qt widgets onto the shell (``build_form(widget)``) and reads
the training options back (``train_config``)."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel,
                            QListWidget, QPushButton, QSpinBox, QVBoxLayout)

from ._plot import LossPlot
from ._worker import ProgressPanel

DEFAULT_LR = 1e-4  #: fine-tuning learning rate (small: the base is already trained)


def _label(text: str = "") -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    return lab


def build_form(w: Any) -> None:
    """Create the widgets as attributes of ``w`` and lay them out on it."""
    w.image_combo = QComboBox()
    w.labels_combo = QComboBox()
    w.labels_combo.setToolTip("a corrected labels layer (its reviewed slices train) or a scribbles "
                              "layer from 'Correct with scribbles' (only the strokes train)")
    w.mode_label = _label()
    w.add_pair_button = QPushButton("Add pair")
    w.remove_pair_button = QPushButton("Remove pair")
    w.pairs_list = QListWidget()
    w.pairs_list.setMaximumHeight(60)
    w.model_combo = QComboBox()
    w.budget_combo = QComboBox()
    w.budget_combo.addItems(["epochs", "seconds"])
    w.epochs_spin = QSpinBox()
    w.epochs_spin.setRange(1, 1000)
    w.epochs_spin.setValue(20)
    w.seconds_spin = QSpinBox()
    w.seconds_spin.setRange(5, 24 * 3600)
    w.seconds_spin.setValue(60)
    w.lr_spin = QDoubleSpinBox()
    w.lr_spin.setDecimals(5)
    w.lr_spin.setRange(1e-5, 1e-1)
    w.lr_spin.setSingleStep(1e-4)
    # 1e-3 wrecked a well-trained shipped model within a few steps (Dice 0.95 -> 0.40)
    w.lr_spin.setValue(DEFAULT_LR)
    w.freeze_check = QCheckBox("freeze encoder")
    w.precision_combo = QComboBox()
    w.precision_combo.addItems(["fp32", "bf16"])
    w.reviewed_label = QLabel("Reviewed slices: 0")
    w.reviewed_list = QListWidget()
    w.reviewed_list.setMaximumHeight(60)
    w.info_label = _label()  #: what the target holds, or why Train is disabled
    w.mark_button = QPushButton("Mark current slice reviewed (Shift-R)")
    w.unmark_button = QPushButton("Unmark slice")
    w.unmark_button.setToolTip("remove the shown slice from the reviewed slices (not trained on)")
    w.train_button = QPushButton("Train")
    w.stop_button = QPushButton("Stop (keep best)")
    w.stop_button.setEnabled(False)
    w.progress = ProgressPanel()
    w.progress.cancel_button.setText("Cancel (discard)")
    w.plot = LossPlot()
    w.result_label = _label()
    w.resegment_button = QPushButton("Re-segment unreviewed slices")
    w.resegment_button.setEnabled(False)
    w.uncertainty_button = QPushButton("Compute uncertainty")
    w.uncertainty_list = QListWidget()
    w.uncertainty_list.setMaximumHeight(90)
    w.next_button = QPushButton("Next slice")

    form = QFormLayout()
    form.addRow("image", w.image_combo)
    form.addRow("labels", w.labels_combo)
    form.addRow("", w.mode_label)
    row = QHBoxLayout()
    row.addWidget(w.add_pair_button)
    row.addWidget(w.remove_pair_button)
    form.addRow("", row)
    form.addRow("pairs", w.pairs_list)
    form.addRow("base model", w.model_combo)
    budget = QHBoxLayout()
    budget.addWidget(w.budget_combo)
    budget.addWidget(w.epochs_spin)
    budget.addWidget(w.seconds_spin)
    form.addRow("budget", budget)
    form.addRow("learning rate", w.lr_spin)
    form.addRow("", w.freeze_check)
    form.addRow("precision", w.precision_combo)
    lay = QVBoxLayout(w)
    lay.addLayout(form)
    for item in (w.reviewed_label, w.reviewed_list):
        lay.addWidget(item)
    marks = QHBoxLayout()
    marks.addWidget(w.mark_button)
    marks.addWidget(w.unmark_button)
    lay.addLayout(marks)
    lay.addWidget(w.info_label)
    row = QHBoxLayout()
    row.addWidget(w.train_button)
    row.addWidget(w.stop_button)
    lay.addLayout(row)
    for item in (w.progress, w.plot, w.result_label, w.resegment_button,
                 QLabel("What to correct next"), w.uncertainty_button, w.uncertainty_list,
                 w.next_button):
        lay.addWidget(item)
    lay.addStretch(1)


def budget_by_time(w: Any) -> bool:
    return w.budget_combo.currentText() == "seconds"


def train_config(w: Any, spatial_dims: int = 2, model_patch: tuple = (), sparse: bool = False) -> Any:
    """The TrainConfig the form shows (``w.train_overrides`` last); ``sparse``: scribbles, with
    the CLI's ``--ignore-label`` options (partial cross-entropy and the gated-CRF term)."""
    from ..training import TrainConfig

    kw: dict[str, Any] = {"lr": w.lr_spin.value(), "freeze_encoder": w.freeze_check.isChecked(),
                          "precision": w.precision_combo.currentText()}
    if budget_by_time(w):
        kw.update(epochs=1000, max_seconds=float(w.seconds_spin.value()))
    else:
        kw.update(epochs=w.epochs_spin.value(), max_seconds=None)
    if spatial_dims != 2 and model_patch:  # the 2D default patch does not fit a 3D model
        kw["patch_size"] = tuple(model_patch)
    if sparse:
        from types import SimpleNamespace

        from ..commands._scribbles import sparse_train_options
        from ..interactive import IGNORE

        kw.update(sparse_train_options(SimpleNamespace(ignore_label=IGNORE, pairwise_weight=None)))
    kw.update(w.train_overrides)
    return TrainConfig(**kw)


def fill_models(w: Any) -> None:
    """List the registry's models in ``w.model_combo``, the active version preselected (the
    default model's first); a broken registry is said in ``w.result_label``."""
    from ..errors import ModelError
    from ..model.registry import ModelRegistry

    reg = ModelRegistry()
    w.model_combo.clear()
    entries = reg.list_models()
    preferred = None
    broken: dict[str, str] = {}  # name -> why its active version cannot be told
    try:
        default = reg.default_model()
    except ModelError as exc:
        default = None
        broken["(default)"] = str(exc)
    actives: dict[str, Any] = {}
    for e in entries:
        if e.name not in actives and e.name not in broken:
            try:
                actives[e.name] = reg.active(e.name)
            except ModelError as exc:  # listed, but the user must fix active.json
                broken[e.name] = str(exc)
        active = actives.get(e.name)
        is_active = active is not None and active.version == e.version
        w.model_combo.addItem(f"{e.ref}{' (active)' if is_active else ''}", e.ref)
        if is_active and (preferred is None or (default and e.name == default.name)):
            preferred = e.ref
    if broken:
        w.result_label.setText("Model registry problem: " + next(iter(broken.values())))
    if preferred is None and default is not None:
        preferred = default.ref
    if preferred is not None:
        w.model_combo.setCurrentIndex(max(0, w.model_combo.findData(preferred)))
