"""Label names and colours of the plugin's result layers, in one place: a Segment result shows
the model's labels (:func:`result_style`); a layer derived from another (a CRF of a model's
probabilities or labels, a baseline run on a segmented image) shows the names and colours of
the layer it derives from (:func:`derived_style`); :func:`upsert_styled_labels` writes a result
and keeps its colours and names current when it is re-run in place.

A style is the ``colormap`` (direct: ``{value: "#rrggbb"}``, background transparent) and
``features`` (``index`` + ``name``: napari's status bar then says "value: 1; name: liver") kwargs
of a Labels layer, or {} when no name nor colour is known (napari's own colours then). No Qt."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._napari.label_style import label_layer_style, label_metadata_from_layer
from .._napari.layers import META_KEY

logger = logging.getLogger(__name__)


def model_label_colors(folder: str | Path | None) -> dict[str, Any]:
    """The colours a model folder declares for its classes: ``label_colors`` in its
    config.json (or in the config's ``provenance``, e.g. copied from the training labels'
    table); {} when none (or the file is unreadable: the palette's colours then)."""
    if not folder:
        return {}
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        logger.debug("no label colours from %s: %s", folder, exc)
        return {}
    if not isinstance(config, dict):
        return {}
    prov = config.get("provenance") if isinstance(config.get("provenance"), dict) else {}
    for value in (config.get("label_colors"), prov.get("label_colors")):
        if isinstance(value, Mapping) and value:
            return {str(k): v for k, v in value.items()}
    return {}


def result_style(provenance: Mapping[str, Any] | None) -> dict[str, Any]:
    """The style of a Segment labels layer: the model's label names (the prediction's
    provenance carries them) with the model's colours where it declares them, else the
    palette's (a distinct colour per class, :func:`label_layer_style`); so every result of one
    model draws a class alike. Reads the small config.json: call it in the job."""
    prov = provenance or {}
    meta = {"label_names": prov.get("label_names") or {},
            "label_colors": prov.get("label_colors") or model_label_colors(prov.get("model_folder"))}
    return label_layer_style(meta)


def _provenance(layer: Any) -> dict[str, Any]:
    meta = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    prov = meta.get("provenance") if isinstance(meta, dict) else None
    return prov if isinstance(prov, dict) else {}


def derived_style(source: Any, values: Iterable[int] | None = None) -> dict[str, Any]:
    """The style of a labels layer whose values mean what ``source``'s mean, so it draws and
    names them as ``source`` does. ``source`` a Labels layer (e.g. a Segment result): its names
    (features table, else its metadata / the model's) and the colours it shows (its direct
    colormap, edits included, else the model's); an Image (the Segment result's probabilities,
    or a scan whose metadata names its labels): the names of its metadata or model with the
    model's colours, as :func:`result_style` gives the Segment result. ``values``: only these
    label values (a baseline labels its object 1). Reads no voxel (cheap on the GUI thread);
    may read the model's small config.json."""
    is_labels = type(source).__name__ == "Labels"
    state = {"metadata": getattr(source, "metadata", None) or {},
             "features": getattr(source, "features", None) if is_labels else None,
             "colormap": getattr(source, "colormap", None) if is_labels else None}
    known = label_metadata_from_layer(state, np.zeros(0, np.uint8))  # no voxel scan
    names = {int(k): v for k, v in (known.get("label_names") or {}).items()}
    colours = {int(k): v for k, v in (known.get("label_colors") or {}).items()}
    model = model_label_colors(_provenance(source).get("model_folder"))
    for key, colour in model.items():
        try:
            colours.setdefault(int(key), colour)
        except (TypeError, ValueError):
            continue
    if values is not None:
        keep = {int(v) for v in values}
        names = {k: v for k, v in names.items() if k in keep}
        colours = {k: v for k, v in colours.items() if k in keep}
    return label_layer_style({"label_names": names, "label_colors": colours})


def _style_key(style: Mapping[str, Any]) -> str:
    if not style:
        return ""
    return json.dumps({"c": {str(k): v for k, v in style["colormap"].items()},
                       "f": {k: list(map(str, v)) for k, v in style["features"].items()}},
                      sort_keys=True)


def apply_style(layer: Any, style: Mapping[str, Any], fresh: bool) -> None:
    """Give a labels layer updated in place the result's colours and names, only when they
    differ from the ones it was last given (setting them repaints the layer; a colour the user
    changed in napari is kept until the labels' meaning changes). A layer styled before and
    now given no style gets napari's own colours back and no names. ``fresh``: the layer was
    just created with ``style``."""
    key = _style_key(style)
    before = getattr(layer, "_attnseg_style", None)
    if not fresh and before != key:
        if style:
            layer.colormap = style["colormap"]
            layer.features = style["features"]
        elif before:  # styled by an earlier run from another source: napari's defaults again
            from napari.utils.colormaps import label_colormap

            layer.colormap = label_colormap(49, 0.5, background_value=0)
            layer.features = {}
    layer._attnseg_style = key


def upsert_styled_labels(viewer: Any, data: np.ndarray, kwargs: dict,
                         style: Mapping[str, Any]) -> Any:
    """Add the labels layer ``kwargs["name"]`` with ``style``, or update it in place (data,
    geometry, metadata) and give it ``style`` when that changed; returns the layer."""
    from ._results import upsert_layer

    name = kwargs["name"]
    before = viewer.layers[name] if name in viewer.layers else None
    layer = upsert_layer(viewer, data, {**kwargs, **style}, "labels")
    apply_style(layer, style, fresh=layer is not before)
    return layer
