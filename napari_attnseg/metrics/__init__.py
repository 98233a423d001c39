"""Segmentation metrics against a ground truth, per label, in physical units (mm, mm³).

Every definition (surface extraction, percentile method, symmetric or directed, empty-mask
policy) is in :data:`DEFINITIONS` and travels with each :class:`MetricsReport`.
"""

from .head import (
    HC_DEFINITIONS,
    NO_HEAD,
    HcReference,
    HeadFit,
    HeadMeasurement,
    fit_head,
    measure_head,
    measure_heads,
    read_hc_reference,
    summarise_heads,
)
from .overlap import (
    binary_mask,
    confusion_counts,
    error_overlay,
    overlap_from_counts,
    overlap_metrics,
    per_slice_dice,
    present_labels,
    volume_metrics,
)
from .report import (
    DEFINITIONS,
    METRICS,
    MetricsReport,
    combine_reports,
    evaluate,
    evaluate_job,
    label_metrics,
)
from .surface import (
    directed_surface_distances,
    surface_dice,
    surface_distances,
    surface_voxels,
)

__all__ = [
    "DEFINITIONS",
    "HC_DEFINITIONS",
    "METRICS",
    "NO_HEAD",
    "HcReference",
    "HeadFit",
    "HeadMeasurement",
    "MetricsReport",
    "binary_mask",
    "combine_reports",
    "confusion_counts",
    "directed_surface_distances",
    "error_overlay",
    "evaluate",
    "evaluate_job",
    "fit_head",
    "label_metrics",
    "measure_head",
    "measure_heads",
    "overlap_from_counts",
    "overlap_metrics",
    "per_slice_dice",
    "present_labels",
    "read_hc_reference",
    "summarise_heads",
    "surface_dice",
    "surface_distances",
    "surface_voxels",
    "volume_metrics",
]
