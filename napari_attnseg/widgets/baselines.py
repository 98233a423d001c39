"""Traditional baselines in napari: Otsu, seeded region growing (seed from a Points layer or a
seed Labels layer), morphological Chan-Vese and geodesic active contours. The result is a Labels
layer "<image> [<method>]" on the image's grid (``metadata["attnseg"]["role"] = "baseline"``),
ready for the compare widget, its object (label 1) named and coloured as label 1 of the image's
Segment result (the model's), else of the image's own label names, if any (:func:`names_source`).
The form is built from :class:`BaselineParams`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from magicgui.widgets import Container, Label, PushButton

from .._napari.layers import META_KEY, derived_layer_kwargs, layer_role, layer_to_volume
from .._progress import Job
from ..errors import GeometryError
from ._layers import LayerPicker, follow_layers
from ._form import align_labels, build_form, read_form, reset_form
from ._result_style import derived_style, upsert_styled_labels
from ._worker import JobRunner, ProgressPanel, notify_error

logger = logging.getLogger(__name__)

#: Combo text → (core method name, layer-name suffix).
METHOD_CHOICES = {
    "Otsu": ("otsu", "otsu"),
    "Region growing": ("region_growing", "region growing"),
    "Chan-Vese": ("chan_vese", "chan-vese"),
    "Geodesic": ("geodesic", "geodesic"),
}
NO_SEED = "(none)"
ROLE = "baseline"
#: The label value every baseline gives its object.
OBJECT_LABEL = 1


def names_source(viewer: Any, image_layer: Any) -> Any:
    """The layer a baseline of ``image_layer`` takes the name and colour of its object from:
    the image's Segment result (the newest, ``"<image> [attnseg] (new)"`` before
    ``"<image> [attnseg]"``: the model's label 1), else the image itself (e.g. sample data,
    whose metadata names its labels)."""
    for name in (f"{image_layer.name} [attnseg] (new)", f"{image_layer.name} [attnseg]"):
        if name in viewer.layers and type(viewer.layers[name]).__name__ == "Labels":
            return viewer.layers[name]
    return image_layer


@dataclass(frozen=True)
class BaselineParams:
    """The form: the method and its settings (tolerance 0 = auto, 10% of the intensity range)."""

    method: Literal["Otsu", "Region growing", "Chan-Vese", "Geodesic"] = field(
        default="Otsu", metadata={"label": "Method"})
    tolerance: Annotated[float, {"min": 0.0, "max": 1e6, "step": 1.0}] = field(
        default=0.0, metadata={"label": "Tolerance (region growing, 0 = auto)",
                               "tooltip": "intensity difference from the seed; 0: 10% of the "
                                          "image's range"})
    iterations: Annotated[int, {"min": 1, "max": 10000}] = field(
        default=100, metadata={"label": "Iterations (active contours)"})
    smoothing: Annotated[int, {"min": 0, "max": 10}] = field(
        default=1, metadata={"label": "Smoothing (active contours)"})

    def problems(self, has_seed: bool) -> list[str]:
        """Why these settings cannot run with (or without) a seed."""
        if METHOD_CHOICES[self.method][0] == "region_growing" and not has_seed:
            return ["region growing needs a seed: add a Points layer and click the object, or "
                    "paint a seed Labels layer, and choose it as seed"]
        return []


@dataclass(frozen=True)
class BaselineConfig:
    image_name: str
    image: np.ndarray
    method: str
    seed: Any = None  # point index tuple or seed mask
    tolerance: float | None = None
    iterations: int = 100
    smoothing: int = 1
    init: np.ndarray | None = None
    suffix: str = ""

    def job(self) -> Job[np.ndarray]:
        from ..baselines import baseline_job

        if self.method in ("chan_vese", "geodesic"):
            return baseline_job(self.method, self.image, iterations=self.iterations,
                                init=self.init, smoothing=self.smoothing)
        return baseline_job(self.method, self.image, seed=self.seed, tolerance=self.tolerance)

    def provenance(self) -> dict[str, Any]:
        seed = self.seed if self.seed is None or isinstance(self.seed, tuple) else "mask"
        return {"baseline": self.method, "source_layer": self.image_name, "seed": seed,
                "tolerance": self.tolerance, "iterations": self.iterations,
                "smoothing": self.smoothing, "init": None if self.init is None else "mask"}


class BaselinesWidget(Container):
    """Run a traditional segmentation on an Image layer."""

    def __init__(self, napari_viewer: Any):
        super().__init__(scrollable=False)
        self.viewer = napari_viewer
        self.image = LayerPicker(label="Image", choices=self._image_choices)
        self.seed = LayerPicker(label="Seed / initial mask", choices=self._seed_choices)
        self.pickers = Container(widgets=[self.image, self.seed], labels=True)
        self.form = build_form(BaselineParams, labels=True)
        self.run_button = PushButton(text="Run")
        self.reset_button = PushButton(text="Reset to defaults")
        self.info = Label(value="")
        self.extend([self.pickers, self.form, self.reset_button, self.run_button, self.info])
        align_labels(self, self.pickers, self.form)  # one column of fields
        self.progress = ProgressPanel()
        self.native.layout().addWidget(self.progress)
        self.message = self.progress.status  # one line for refusals, progress and results
        self.runner: JobRunner | None = None
        self.last_layer = None
        self.run_button.changed.connect(lambda *_: self.run())
        self.reset_button.changed.connect(lambda *_: reset_form(self.form, BaselineParams))
        self.pickers.changed.connect(lambda *_: self.update_info())
        self.form.changed.connect(lambda *_: self.update_info())
        follow_layers(self.viewer, self._layers_changed)
        self._layers_changed()

    # Qt handles of the pickers and fields, for scripts and benchmarks (``setCurrentText``,
    # ``setValue``); the magicgui widgets above are the API.
    image_combo = property(lambda self: self.image.native)
    seed_combo = property(lambda self: self.seed.native)
    method_combo = property(lambda self: self.form.method.native)
    tolerance_spin = property(lambda self: self.form.tolerance.native)
    iterations_spin = property(lambda self: self.form.iterations.native)
    smoothing_spin = property(lambda self: self.form.smoothing.native)

    def _image_choices(self, *_: Any) -> list:
        return [(ly.name, ly) for ly in self.viewer.layers if type(ly).__name__ == "Image"
                and "probabilit" not in ly.name
                and layer_role(ly) not in ("probabilities", "uncertainty")]

    def _seed_choices(self, *_: Any) -> list:
        return [(NO_SEED, NO_SEED)] + [(ly.name, ly) for ly in self.viewer.layers
                                       if type(ly).__name__ in ("Points", "Labels")]

    def _layers_changed(self, *_: Any) -> None:
        self.reset_choices()
        self.update_info()

    def settings(self) -> BaselineParams:
        return read_form(self.form, BaselineParams)

    def problems(self) -> list[str]:
        out = [] if self.image.value is not None else ["choose an Image layer"]
        return out + self.settings().problems(self.seed.value not in (None, NO_SEED))

    def update_info(self) -> None:
        """The info line says what is missing; Run runs only when nothing is."""
        problems = self.problems()
        self.info.value = "; ".join(problems)
        self.run_button.enabled = not problems

    # ------------------------------------------------------------------ inputs
    def _seed(self, image_layer: Any, image_vol: Any) -> Any:
        """A point index (from the first point, world → image data index) or a seed mask."""
        layer = self.seed.value
        if layer is None or layer == NO_SEED:
            return None
        name = layer.name
        if type(layer).__name__ == "Points":
            if len(layer.data) == 0:
                raise ValueError(f"the Points layer '{name}' has no point: click a seed first")
            world = layer.data_to_world(np.asarray(layer.data[0], dtype=float))
            idx = np.round(np.asarray(image_layer.world_to_data(world), dtype=float)).astype(int)
            idx = tuple(int(v) for v in idx[-image_vol.ndim:])
            if not all(0 <= i < n for i, n in zip(idx, image_vol.shape)):
                raise ValueError(f"the seed point {idx} lies outside the image {image_vol.shape}")
            return idx
        vol = layer_to_volume(layer)
        if not image_vol.same_grid(vol):
            raise GeometryError(f"the seed Labels layer '{name}' is not on the grid of the image "
                                f"'{image_layer.name}' ({vol.shape} vs {image_vol.shape})")
        mask = np.asarray(vol.data) != 0
        if not mask.any():
            raise ValueError(f"the seed Labels layer '{name}' is empty: paint a seed first")
        return mask

    def snapshot(self) -> BaselineConfig:
        problems = self.problems()
        if problems:
            raise ValueError(problems[0])
        layer = self.image.value
        name = layer.name
        if getattr(layer, "rgb", False):
            raise ValueError(f"'{name}' is an RGB image; convert it to grayscale first")
        vol = layer_to_volume(layer)
        s = self.settings()
        method, suffix = METHOD_CHOICES[s.method]
        seed = self._seed(layer, vol)
        init = None
        if method in ("chan_vese", "geodesic") and seed is not None:
            if isinstance(seed, tuple):
                init = np.zeros(vol.shape, bool)
                init[seed] = True  # a point grows (geodesic balloon +1)
            else:
                init = seed
        return BaselineConfig(
            image_name=name, image=np.array(vol.data), method=method,
            seed=seed if method == "region_growing" else None,
            tolerance=s.tolerance if s.tolerance > 0 else None, iterations=s.iterations,
            smoothing=s.smoothing, init=init, suffix=suffix,
        )

    # ------------------------------------------------------------------ run
    def make_runner(self) -> JobRunner | None:
        try:
            cfg = self.snapshot()
        except (GeometryError, ValueError) as exc:
            self.message.setText(str(exc))
            notify_error(exc, "Baselines")
            return None
        self.message.setText("")
        self.runner = JobRunner(cfg.job, self.progress, context="Baselines",
                                on_result=lambda labels: self.show_result(cfg, labels))
        return self.runner

    def run(self) -> None:
        if self.runner is not None and self.runner.running:
            self.message.setText("a baseline is already running")
            return
        runner = self.make_runner()
        if runner is not None:
            runner.start()

    def show_result(self, cfg: BaselineConfig, labels: np.ndarray) -> Any:
        if cfg.image_name not in self.viewer.layers:
            raise ValueError(f"the image layer '{cfg.image_name}' was removed during the run")
        source = self.viewer.layers[cfg.image_name]
        kwargs = derived_layer_kwargs(source, f"{cfg.image_name} [{cfg.suffix}]",
                                      provenance=cfg.provenance(), shape=labels.shape)
        meta = kwargs["metadata"][META_KEY]
        meta["role"] = ROLE
        style = derived_style(names_source(self.viewer, source), values=(OBJECT_LABEL,))
        # the object's name (Compare and the writers read it), not the image's other labels'
        features = style.get("features") or {"index": [], "name": []}
        meta["label_names"] = {str(i): n for i, n in zip(features["index"], features["name"])
                               if i}
        self.last_layer = upsert_styled_labels(self.viewer, labels, kwargs, style)
        self.message.setText(f"{cfg.suffix}: {int(np.count_nonzero(labels))} voxels labelled")
        return self.last_layer
