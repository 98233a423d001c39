"""The Fine-tune widget's form and layout: the pickers (image; labels = corrected labels or
scribbles, with the mode stated), the pairs, base model, budget and training options, the
reviewed slices, Train / Stop, the progress panel and loss plot, the result line, re-segment and
"What to correct next". The training options are :class:`FinetuneParams`, a magicgui form built
with :func:`~._form.build_form`; the layer pickers are magicgui combos over the viewer's layers.
Builds the widgets onto the shell (``build_form(widget, ...)``) and reads the training options
back (``train_config``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from magicgui.widgets import Container
from qtpy.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QListWidget, QPushButton,
                            QVBoxLayout)

from ._layers import LayerPicker
from ._form import build_form as params_form
from ._form import read_form
from ._plot import LossPlot
from ._worker import ProgressPanel

DEFAULT_LR = 1e-4  #: fine-tuning learning rate (small: the base is already trained)


@dataclass(frozen=True)
class FinetuneParams:
    """The form's training options: the budget (epochs, or seconds of training), the learning
    rate (1e-3 wrecked a well-trained shipped model within a few steps: Dice 0.95 -> 0.40),
    encoder freezing and the precision; the TrainConfig is built from them
    (:func:`train_config`)."""

    budget: Literal["epochs", "seconds"] = field(
        default="epochs", metadata={"label": "budget", "tooltip": "train for a number of "
                                    "epochs, or for a number of seconds"})
    epochs: Annotated[int, {"min": 1, "max": 1000}] = field(
        default=20, metadata={"label": "epochs"})
    seconds: Annotated[int, {"min": 5, "max": 24 * 3600}] = field(
        default=60, metadata={"label": "seconds"})
    lr: Annotated[float, {"min": 1e-5, "max": 1e-1, "step": 1e-4, "decimals": 5}] = field(
        default=DEFAULT_LR, metadata={"label": "learning rate"})
    freeze_encoder: bool = field(default=False, metadata={"label": "freeze encoder"})
    precision: Literal["fp32", "bf16"] = field(default="fp32", metadata={"label": "precision"})


def _label(text: str = "") -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    return lab


def build_form(w: Any, image_choices: Any, labels_choices: Any) -> None:
    """Create the widgets as attributes of ``w`` and lay them out on it: the layer pickers
    (magicgui combos whose ``*_choices(widget)`` callables list the viewer's layers; their Qt
    combos are ``w.image_combo`` / ``w.labels_combo``), the pairs, the base model, the
    :class:`FinetuneParams` form (``w.params``; its Qt fields as ``w.budget_combo``,
    ``w.epochs_spin``, ...) and the Qt parts below it."""
    w.image = LayerPicker(label="image", choices=image_choices)
    w.labels = LayerPicker(label="labels", choices=labels_choices,
                        tooltip="a corrected labels layer (its reviewed slices train) or a "
                                "scribbles layer from 'Correct with scribbles' (only the "
                                "strokes train)")
    w.pickers = Container(widgets=[w.image, w.labels], labels=True)
    w.image_combo, w.labels_combo = w.image.native, w.labels.native
    w.params = params_form(FinetuneParams, labels=True)
    for name, attr in (("budget", "budget_combo"), ("epochs", "epochs_spin"),
                       ("seconds", "seconds_spin"), ("lr", "lr_spin"),
                       ("freeze_encoder", "freeze_check"), ("precision", "precision_combo")):
        setattr(w, attr, getattr(w.params, name).native)  # Qt handles for scripts and tests
    w.mode_label = _label()
    w.add_pair_button = QPushButton("Add pair")
    w.remove_pair_button = QPushButton("Remove pair")
    w.pairs_list = QListWidget()
    w.pairs_list.setMaximumHeight(60)
    w.model_combo = QComboBox()
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
    form.addRow("", w.mode_label)
    row = QHBoxLayout()
    row.addWidget(w.add_pair_button)
    row.addWidget(w.remove_pair_button)
    form.addRow("", row)
    form.addRow("pairs", w.pairs_list)
    form.addRow("base model", w.model_combo)
    lay = QVBoxLayout(w)
    lay.addWidget(w.pickers.native)
    lay.addLayout(form)
    lay.addWidget(w.params.native)
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


def settings(w: Any) -> FinetuneParams:
    """The training options the form shows."""
    return read_form(w.params, FinetuneParams)


def budget_by_time(w: Any) -> bool:
    return w.params.budget.value == "seconds"


def train_config(w: Any, spatial_dims: int = 2, model_patch: tuple = (), sparse: bool = False) -> Any:
    """The TrainConfig the form shows (``w.train_overrides`` last); ``sparse``: scribbles, with
    the CLI's ``--ignore-label`` options (partial cross-entropy and the gated-CRF term)."""
    from ..training import TrainConfig

    s = settings(w)
    kw: dict[str, Any] = {"lr": s.lr, "freeze_encoder": s.freeze_encoder,
                          "precision": s.precision}
    if s.budget == "seconds":
        kw.update(epochs=1000, max_seconds=float(s.seconds))
    else:
        kw.update(epochs=s.epochs, max_seconds=None)
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
