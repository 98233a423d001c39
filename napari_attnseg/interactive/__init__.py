"""Interactive correction without Qt: scribble correction of a slice (the model's probabilities,
stroke evidence spread by a geodesic distance on the image, hard constraints, the dense CRF), its
propagation to neighbouring slices, fill-between-slices interpolation, and a simulated user for
benchmarks and tests."""

from .interpolate import fill_between, interpolate_labels
from .propagate import PropagationResult, propagate, propagate_job
from .scribbles import (
    IGNORE,
    ScribbleParams,
    SliceCorrection,
    apply_scribbles,
    correct_slice,
    enforce_scribbles,
    geodesic_distance,
    probabilities_from_labels,
)

__all__ = [
    "IGNORE", "PropagationResult", "ScribbleParams", "SliceCorrection", "apply_scribbles",
    "correct_slice", "enforce_scribbles", "fill_between", "geodesic_distance",
    "interpolate_labels", "probabilities_from_labels", "propagate", "propagate_job",
]
