"""Running :func:`~napari_attnseg.training.loop.train_job` on several processes.

Launch the same script or ``attnseg train`` with ``torchrun --nproc_per_node=N ...``;
:func:`init_from_env` joins the process group that torchrun describes in the environment
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...), using NCCL on GPUs and gloo on the CPU. The
training loop notices the initialized group by itself: it wraps the network in
DistributedDataParallel, gives each rank a disjoint share of one global batch (the batch size is
the global one), sums the loss statistics over ranks, and only rank 0 writes checkpoints (the
CLI also only lets rank 0 write logs and register models).
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)

__all__ = ["cleanup", "device_for_rank", "init_from_env", "is_main_process", "rank_and_world"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialized process group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single-process run): the process that writes files."""
    return rank_and_world()[0] == 0


def device_for_rank() -> torch.device:
    """``cuda:LOCAL_RANK`` when GPUs are available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Join the process group described by torchrun's environment variables, if any.

    Returns ``(rank, world_size)``; ``(0, 1)`` without doing anything when ``WORLD_SIZE`` is
    unset or 1. ``backend`` defaults to NCCL with CUDA, gloo otherwise.
    """
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(device_for_rank())
        logger.info("joined process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return rank_and_world()


def cleanup() -> None:
    """Leave the process group (no-op when none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
