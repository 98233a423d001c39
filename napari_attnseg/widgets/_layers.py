"""Pickers that follow the viewer's layers.

napari calls ``reset_choices`` of a docked widget on insertions, removals, reorders and renames,
but a widget made by a script (or a test) is not docked, and a plain Qt picker has no
``reset_choices``. :func:`follow_layers` connects one callback to all four, on every napari the
package supports: ``LayerList.events.renamed`` where napari has it, else each layer's own
``name`` event. :class:`LayerPicker` is a magicgui combo that keeps the chosen layer through such
a refresh: a plain ``ComboBox`` matches its items by name, so a rename (of the chosen layer)
moved the choice to the first layer and told the widget so (Refine then applied that image's
CRF preset over the user's settings).
"""

from __future__ import annotations

from typing import Any, Callable

from magicgui.widgets import ComboBox


def _same(a: Any, b: Any) -> bool:
    return a is b or (isinstance(a, (str, int, float)) and a == b)


class LayerPicker(ComboBox):
    """A combo of layers (or other choices) whose ``reset_choices`` keeps the current value
    (the same layer object) while it is still offered, and emits ``changed`` only when the value
    really changed (its layer was removed)."""

    def reset_choices(self, *_: Any) -> None:
        before = self.value
        with self.changed.blocked():
            super().reset_choices()
            if not _same(self.value, before) and any(_same(c, before) for c in self.choices):
                self.value = before
        if not _same(self.value, before):
            self.changed.emit(self.value)


def follow_layers(viewer: Any, callback: Callable[..., Any]) -> None:
    """Call ``callback`` whenever a layer of ``viewer`` is added, removed, moved or renamed."""
    events = viewer.layers.events
    for name in ("inserted", "removed", "reordered"):
        getattr(events, name).connect(callback)
    if hasattr(events, "renamed"):
        events.renamed.connect(callback)
        return

    def _watch(layer: Any) -> None:
        layer.events.name.connect(callback)

    for layer in viewer.layers:
        _watch(layer)
    events.inserted.connect(lambda event: _watch(event.value))
