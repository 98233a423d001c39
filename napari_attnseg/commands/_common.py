"""Helpers shared by the CLI subcommands: a terminal progress bar that drains a core job."""

from __future__ import annotations

import sys
from typing import Any

from .._progress import Job, Progress, drain


def run_with_progress(job: Job[Any], desc: str = "", quiet: bool = False) -> Any:
    """Drain ``job`` showing a tqdm progress bar on stderr (nothing when ``quiet``)."""
    if quiet:
        return drain(job)
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, file=sys.stderr, leave=True, dynamic_ncols=True)
    stage = [None]

    def show(p: Progress) -> None:
        if p.stage != stage[0]:
            stage[0] = p.stage
            bar.reset(total=max(p.total, 0))
            bar.set_description(f"{desc} {p.stage}".strip())
        if p.total and bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        if p.message:
            bar.set_postfix_str(p.message, refresh=False)
        bar.refresh()

    try:
        return drain(job, show)
    finally:
        bar.close()
