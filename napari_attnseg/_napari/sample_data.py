"""npe2 sample data: the phantoms of :mod:`napari_attnseg.sample`, each with ground truth."""

from __future__ import annotations

from typing import Any

from .layers import layer_data_tuple

LayerDataTuple = tuple[Any, dict[str, Any], str]


def _pair(name: str, image, labels, image_kwargs: dict[str, Any]) -> list[LayerDataTuple]:
    from .display import ensure_current_viewer_display

    ensure_current_viewer_display()  # radiological display and orientation letters
    img = layer_data_tuple(image, name=name, layer_type="image")
    img[1].update(image_kwargs)
    lab = layer_data_tuple(labels, name=f"{name} ground truth", layer_type="labels")
    lab[1]["opacity"] = 0.5
    return [img, lab]


def ct_phantom() -> list[LayerDataTuple]:
    """CT phantom (HU) with its organ/lesion ground truth."""
    from ..sample import ct_phantom as make

    image, labels = make(0)
    return _pair("ct_phantom", image, labels,
                 {"colormap": "gray", "contrast_limits": (-160.0, 240.0)})


def mr_phantom() -> list[LayerDataTuple]:
    """MR phantom with its ventricle/lesion ground truth."""
    from ..sample import mr_phantom as make

    image, labels = make(0)
    return _pair("mr_phantom", image, labels, {"colormap": "gray"})


def us_cine() -> list[LayerDataTuple]:
    """Ultrasound 2D+t cine (axes t, y, x) with the head ground truth per frame."""
    from ..sample import us_cine as make

    image, labels = make(0)
    out = _pair("us_cine", image, labels, {"colormap": "gray", "contrast_limits": (0, 255)})
    for _, kwargs, _ in out:
        kwargs["axis_labels"] = ("t", "y", "x")
        kwargs["metadata"]["attnseg"]["world_axes"] = None  # (t, y, x): not patient space
    return out
