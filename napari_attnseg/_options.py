"""One lookup for string options, with a did-you-mean suggestion in the error."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: post-processing steps a model config may list (applied by inference.postprocess)
POSTPROCESS_STEPS = ("largest_component", "fill_holes", "ellipse", "largest_component_3d")
#: most neighbouring slices on each side a 2.5D model may take as extra input channels
MAX_CONTEXT_SLICES = 8


def choose(value: str, valid: Iterable[str], what: str = "option") -> str:
    """Return the canonical spelling of ``value`` among ``valid`` (case-insensitive).

    Raises ``ValueError`` naming the bad value, the valid ones and the nearest match.
    """
    valid = list(valid)
    lowered = {v.lower(): v for v in valid}
    key = str(value).strip().lower()
    if key in lowered:
        return lowered[key]
    near = difflib.get_close_matches(key, list(lowered), n=1, cutoff=0.4)
    hint = f"; did you mean '{lowered[near[0]]}'?" if near else ""
    raise ValueError(f"Unknown {what} '{value}': expected one of {', '.join(valid)}{hint}")
