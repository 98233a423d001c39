"""Dense CRF refinement (pydensecrf imported lazily) and its parameter auto-tuning."""

from .autotune import AutotuneResult, Trial, autotune, autotune_job, default_grid
from .dense_crf import (
    CRFParams,
    CRFResult,
    default_params,
    estimate_memory,
    normalize_intensity,
    refine,
    refine_job,
    shutdown_pool,
)

__all__ = [
    "AutotuneResult", "CRFParams", "CRFResult", "Trial", "autotune", "autotune_job",
    "default_grid", "default_params", "estimate_memory", "normalize_intensity", "refine",
    "refine_job", "shutdown_pool",
]
