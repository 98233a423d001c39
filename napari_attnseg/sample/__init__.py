"""Synthetic phantoms with ground truth (CT, MR, ultrasound cine); numpy and scipy only."""

from .phantoms import KINDS, ct_phantom, mr_phantom, phantom_dataset, us_cine

__all__ = ["KINDS", "ct_phantom", "mr_phantom", "phantom_dataset", "us_cine"]
