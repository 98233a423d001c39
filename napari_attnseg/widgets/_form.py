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


def build_form(config_cls: type, **container_kwargs: Any) -> Any:
    """A magicgui ``Container`` with one widget per field of ``config_cls`` (named as the field)."""
    from magicgui.widgets import Container, create_widget

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
    return Container(widgets=widgets, **container_kwargs)


def read_form(form: Any, config_cls: type) -> Any:
    """The dataclass instance the form shows (its ``__post_init__`` validates the values)."""
    return config_cls(**{f.name: getattr(form, f.name).value for f in dataclasses.fields(config_cls)})


def reset_form(form: Any, config_cls: type) -> None:
    """Show the dataclass defaults again."""
    for f in dataclasses.fields(config_cls):
        getattr(form, f.name).value = f.default
