"""Inference: device choice, intensity presets and geometry, sliding-window blending, memory
planning and the predictor used by the Segment widget and ``attnseg predict``.

Importing this package imports torch; widgets import it lazily.
"""

from .device import autocast_context, device_summary, select_device
from .memory import MemoryPlan, plan_memory
from .predictor import (
    PredictConfig,
    Prediction,
    plan_prediction,
    predict,
    predict_job,
    predict_slice,
    warm_up,
)
from .sliding_window import gaussian_importance, labels_from_probabilities, sliding_window_job

__all__ = [
    "MemoryPlan",
    "PredictConfig",
    "Prediction",
    "autocast_context",
    "device_summary",
    "gaussian_importance",
    "labels_from_probabilities",
    "plan_memory",
    "plan_prediction",
    "predict",
    "predict_job",
    "predict_slice",
    "select_device",
    "sliding_window_job",
    "warm_up",
]
