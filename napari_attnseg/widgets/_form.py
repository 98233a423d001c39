"""A magicgui form built from a frozen config dataclass: one widget per field, read back into the
dataclass, reset to its defaults. Field types come from the annotations (``Annotated[float,
{"min": 0, "max": 1}]`` passes the options to magicgui; ``"decimals"`` among them fixes a
float's precision; ``Literal[...]`` gives a combo box) and the field's
``metadata={"label": ..., "tooltip": ...}`` names it in the form."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


def _split(annotation: Any) -> tuple[Any, dict]:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        options: dict = {}
        for e in extra:
            if isinstance(e, dict):
                options.update(e)
        return base, options
    return annotation, {}


def build_fields(config_cls: type) -> list:
    """One magicgui widget per field of ``config_cls`` (named as the field), for a form of its
    own (:func:`build_form`) or to put straight into another container (:class:`Fields`)."""
    from magicgui.widgets import create_widget

    hints = typing.get_type_hints(config_cls, include_extras=True)
    widgets = []
    for f in dataclasses.fields(config_cls):
        annotation, options = _split(hints[f.name])
        if typing.get_origin(annotation) is typing.Literal:
            options = {"choices": list(typing.get_args(annotation)), **options}
            annotation = str
        label = f.metadata.get("label", f.name.replace("_", " "))
        decimals, step = options.pop("decimals", None), options.get("step")
        if decimals is not None:  # the precision first, so min and value are not rounded
            options["step"] = 10.0 ** -int(decimals)
        w = create_widget(value=f.default, annotation=annotation, name=f.name, label=label,
                          options=options)
        if decimals is not None and step is not None:
            w.step = step  # (a coarser step keeps the decimals)
        if f.metadata.get("tooltip"):
            w.tooltip = f.metadata["tooltip"]
        widgets.append(w)
    return widgets


def align_labels(container: Any, *rows_of: Any) -> None:
    """Give every row label of ``container`` (a magicgui ``Container``) and of the containers
    ``rows_of`` (its sub-forms: pickers, options) the widest one's width, so their fields start
    at one x; again each time ``container`` is shown (magicgui sizes the labels before the
    dock's style sheet sets their font, and a long label then pushes its field to the right)."""
    from qtpy.QtCore import QEvent, QObject
    from qtpy.QtWidgets import QLabel

    def align() -> None:
        labels = []
        for c in (container, *rows_of):
            layout = c.native.layout()
            for i in range(layout.count()):
                row = layout.itemAt(i).widget()
                inner = row.layout() if row is not None else None
                first = inner.itemAt(0).widget() if inner is not None and inner.count() > 1 else None
                if isinstance(first, QLabel) and first.text():
                    labels.append(first)
        width = max((lab.sizeHint().width() for lab in labels), default=0)
        for lab in labels:
            lab.setMinimumWidth(width)

    class _OnShow(QObject):
        def eventFilter(self, obj: Any, event: Any) -> bool:
            if event.type() == QEvent.Type.Show:
                align()
            return False

    align()
    container._align_filter = _OnShow(container.native)  # kept alive with the widget
    container.native.installEventFilter(container._align_filter)


def build_form(config_cls: type, **container_kwargs: Any) -> Any:
    """A magicgui ``Container`` with one widget per field of ``config_cls`` (named as the field)."""
    from magicgui.widgets import Container

    return Container(widgets=build_fields(config_cls), **container_kwargs)


class Fields:
    """The widgets of :func:`build_fields` by field name (``fields.overlap.value``), for
    :func:`read_form` / :func:`reset_form` when they sit in a container with other rows (one
    container: its labels and fields line up, where a nested form would be indented)."""

    def __init__(self, widgets: list) -> None:
        self._widgets = list(widgets)
        for w in self._widgets:
            setattr(self, w.name, w)

    def __iter__(self):
        return iter(self._widgets)


def read_form(form: Any, config_cls: type) -> Any:
    """The dataclass instance the form shows (its ``__post_init__`` validates the values)."""
    return config_cls(**{f.name: getattr(form, f.name).value for f in dataclasses.fields(config_cls)})


def reset_form(form: Any, config_cls: type) -> None:
    """Show the dataclass defaults again."""
    for f in dataclasses.fields(config_cls):
        getattr(form, f.name).value = f.default
