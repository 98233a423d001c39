"""The Compare widget's form (:class:`CompareParams`, built with :func:`~._form.build_form`) and
its ground-truth picker (:class:`TruthPicker`: a magicgui combo whose choices follow the viewer
and whose selection the widget's rule sets after every refresh). No Qt import here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from ._layers import LayerPicker

HC_TOOLTIP = ("fit an ellipse to each head (label below) and report its perimeter in mm, "
              "HC18's measure; the ellipses are drawn")


@dataclass(frozen=True)
class CompareParams:
    """The form: how the candidates are scored (the layers are picked above it)."""

    tolerance_mm: Annotated[float, {"min": 0.0, "max": 100.0, "step": 0.1}] = field(
        default=1.0, metadata={"label": "Surface Dice tolerance (mm)"})
    surface: bool = field(default=True, metadata={
        "label": "surface metrics (HD, HD95, ASSD, surface Dice)"})
    auto_recompute: bool = field(default=False, metadata={"label": "auto-recompute after edits"})
    hc: bool = field(default=False, metadata={"label": "Head circumference (2D)",
                                              "tooltip": HC_TOOLTIP})
    hc_label: Annotated[int, {"min": 1, "max": 255}] = field(
        default=1, metadata={"label": "Head label", "tooltip": "the label value of the head"})


class TruthPicker(LayerPicker):
    """The ground-truth combo; after every choices refresh (layer events, docking) the
    widget's rule chooses what it shows (``after_reset``)."""

    after_reset: Any = None

    def reset_choices(self, *_: Any) -> None:
        before = self.value
        super().reset_choices()
        if self.after_reset is not None:
            self.after_reset(before)
