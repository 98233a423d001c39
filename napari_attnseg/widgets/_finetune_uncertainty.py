"""The Fine-tune widget's "What to correct next": the entropy of the "<image> [attnseg]
probabilities" layer (or of a test-time-flip prediction) as "<image> [attnseg] uncertainty", the
most uncertain unreviewed slices ranked, and the "Next slice" button. A mixin of
:class:`~.finetune.FinetuneWidget` (it uses its combos, progress panel and reviewed slices)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._napari.layers import derived_layer_kwargs, layer_to_volume
from ._worker import JobRunner, upsert_layer


class UncertaintyMixin:
    viewer: Any
    ranked: list[tuple[int, float]]
    _next_last: int | None

    def compute_uncertainty(self, *_: Any, sync: bool = False) -> Any:
        from ..inference.uncertainty import entropy_map

        name = self.image_combo.currentText()
        if name not in self.viewer.layers:
            raise ValueError("choose an image layer first")
        img = self.viewer.layers[name]
        prob_name = f"{name} [attnseg] probabilities"
        if prob_name in self.viewer.layers:
            from .refine import class_probabilities

            layer = self.viewer.layers[prob_name]
            probs = class_probabilities(layer, tuple(img.data.shape))  # every class, if kept
            probs = np.asarray(layer.data if probs is None else probs, dtype=np.float32)
            if probs.ndim == img.data.ndim:  # the layer holds the foreground probability
                probs = np.stack([1.0 - probs, probs])
            self.show_uncertainty(name, entropy_map(probs))
            return None
        volume = layer_to_volume(img, np.array(img.data))
        ref = self.model_combo.currentData()
        if not ref:
            raise ValueError("no model to predict with: segment first or add a model")

        def factory():
            from ..inference.uncertainty import flip_uncertainty_job
            from ..model.checkpoint import load_model
            from ..model.registry import ModelRegistry

            model = load_model(ModelRegistry().resolve(ref))
            return (yield from flip_uncertainty_job(model, volume))

        self.aux_runner = JobRunner(factory, self.progress, context="Uncertainty",
                                    on_result=lambda r: self.show_uncertainty(name, r.entropy))
        return self.aux_runner.run_sync() if sync else self.aux_runner.start()

    def show_uncertainty(self, image_name: str, umap: np.ndarray) -> None:
        from ..inference.uncertainty import rank_slices

        img = self.viewer.layers[image_name]
        kw = derived_layer_kwargs(img, f"{image_name} [attnseg] uncertainty")
        kw.update(colormap="inferno", contrast_limits=(0.0, 1.0), blending="additive")
        upsert_layer(self.viewer, umap, kw, "image")
        flags = self.reviewed_flags()
        reviewed = flags if flags is not None and umap.ndim == 3 and flags.shape[0] == umap.shape[0] \
            else None
        self.ranked = rank_slices(umap, reviewed=reviewed, top_k=20) if umap.ndim == 3 else []
        self._show_ranking()

    def _show_ranking(self) -> None:
        self.uncertainty_list.clear()
        self.uncertainty_list.addItems([f"slice {i}: {s:.3f}" for i, s in self.ranked])

    def go_to_slice(self, index: int) -> None:
        name = self.image_combo.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is None or layer.ndim != 3:
            return
        world = layer.data_to_world((index, 0, 0))
        axis = self.viewer.dims.ndim - layer.ndim
        self.viewer.dims.set_point(axis, float(world[0]))

    def next_slice(self, *_: Any) -> int | None:
        """Go to the next most uncertain unreviewed slice: the top one, or the one after the
        slice "Next" showed last if the viewer still shows it (wrapping)."""
        if not self.ranked:
            return None
        order = [i for i, _ in self.ranked]
        current = self.current_slice()
        last = self._next_last
        pos = order.index(last) + 1 if last in order and last == current else 0
        target = order[pos % len(order)]
        self._next_last = target
        self.go_to_slice(target)
        return target
