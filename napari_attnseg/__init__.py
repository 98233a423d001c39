"""napari-attnseg: attention U-Net segmentation, dense-CRF refinement, metrics and fine-tuning
for medical scans, in napari and on the command line.

This module imports nothing heavy: torch, pydicom and pydensecrf load on first use.
"""

__version__ = "0.1.0"
