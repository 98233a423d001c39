"""Label names and colours on napari Labels layers, both ways.

* :func:`label_layer_style`: layer kwargs for a label volume whose names or colours are known:
  a direct ``colormap`` (``{value: "#rrggbb"}``, background transparent, palette colours for a
  few more values so newly painted labels stay distinct) and ``features`` (``index`` + ``name``),
  which napari shows in the status bar under the cursor ("value: 2; name: lesion").
* :func:`label_metadata_from_layer`: ``label_names`` / ``label_colors`` from a layer's state
  (what napari passes to writers): names from the ``features`` table, else the plugin's metadata
  (:func:`~napari_attnseg._napari.layers.layer_label_names`); colours from a direct colormap (what
  the user sees, edits included), else the metadata.

No napari import: the colormap is duck-typed (``color_dict`` / ``map``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..io.labeltable import (default_color, hex_color, labels_from_metadata, parse_color,
                             present_values)

#: Extra palette entries beyond the largest known label (for labels the user paints next).
SPARE_COLOURS = 8


def label_layer_style(metadata: Mapping[str, Any] | None, data: Any = None) -> dict[str, Any]:
    """``colormap`` and ``features`` kwargs for a Labels layer; {} when no name nor colour is
    known (napari's own colours then)."""
    meta = metadata or {}
    if not (meta.get("label_names") or meta.get("label_colors")):
        return {}
    values = present_values(np.asarray(data)) if data is not None else []
    labels = labels_from_metadata(meta, values)
    if not labels:
        return {}
    colormap: dict[Any, str] = {None: "#ffffff", 0: "transparent"}
    top = max(lb.value for lb in labels)
    for v in range(1, min(top + SPARE_COLOURS, 4096) + 1):
        colormap[v] = hex_color(default_color(v))
    for lb in labels:
        colormap[lb.value] = lb.hex
    features = {"index": [0] + [lb.value for lb in labels],
                "name": ["background"] + [lb.name for lb in labels]}
    return {"colormap": colormap, "features": features}


def _names_from_features(features: Any) -> dict[int, str]:
    if features is None:
        return {}
    try:
        cols = list(features.columns) if hasattr(features, "columns") else list(features)
        if "index" not in cols or "name" not in cols:
            return {}
        idx, names = list(features["index"]), list(features["name"])
    except (TypeError, KeyError, ValueError):
        return {}
    out = {}
    for i, n in zip(idx, names):
        try:
            if int(i) > 0 and isinstance(n, str) and n:
                out[int(i)] = n
        except (TypeError, ValueError):
            continue
    return out


def _colour_of(colormap: Any, value: int) -> tuple[int, int, int] | None:
    cdict = getattr(colormap, "color_dict", None)
    if isinstance(cdict, Mapping) and value in cdict:
        return parse_color(cdict[value])
    return None


def label_metadata_from_layer(state: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """``{"label_names": ..., "label_colors": ...}`` (string keys) for the labels of a layer
    state (napari writer ``meta``); {} when nothing is known."""
    from .layers import META_KEY, layer_label_names

    fake = SimpleNamespace(metadata=dict(state.get("metadata") or {}))
    names = layer_label_names(fake)
    names.update(_names_from_features(state.get("features")))
    names.pop(0, None)
    plugin = fake.metadata.get(META_KEY) if isinstance(fake.metadata.get(META_KEY), dict) else {}
    prov = plugin.get("provenance") if isinstance(plugin.get("provenance"), dict) else {}
    known = {str(k): v for k, v in (prov.get("label_colors") or {}).items()}
    values = sorted(set(present_values(np.asarray(data))) | set(names))
    colours: dict[str, str] = {}
    colormap = state.get("colormap")
    for v in values:
        rgb = _colour_of(colormap, v) if colormap is not None else None
        if rgb is None and (c := parse_color(known.get(str(v)))) is not None:
            rgb = c
        if rgb is not None:
            colours[str(v)] = hex_color(rgb)
    out: dict[str, Any] = {}
    if names:
        out["label_names"] = {str(k): v for k, v in sorted(names.items())}
    if colours and (names or getattr(colormap, "color_dict", None)):
        out["label_colors"] = colours
    return out
