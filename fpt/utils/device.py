"""Which device a process runs on: the one asked for, the config's, or what is available."""

import logging

import torch

from detectron2.utils import comm

__all__ = ["pick_device", "training_device"]

logger = logging.getLogger(__name__)


def pick_device(requested=None, configured=None):
    """The device to run on (training or inference): ``requested`` if given; else the config's
    device when usable (a configured ``cuda`` where CUDA is missing becomes ``cpu``, logged);
    else ``cuda`` when available, ``cpu`` otherwise."""
    if requested:
        return torch.device(requested)
    if configured and (not str(configured).startswith("cuda") or torch.cuda.is_available()):
        return torch.device(configured)
    if configured:
        logger.info(f"CUDA is not available: running on CPU instead of {configured}.")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def training_device(configured):
    """The device this process trains on: the configured one (``cuda`` falls back to ``cpu``
    where CUDA is missing, see :func:`pick_device`); in a multi-process CUDA run, this process's
    GPU, ``cuda:<local rank>``, whatever index the config names."""
    device = pick_device(configured=configured)
    if device.type == "cuda" and comm.get_world_size() > 1:
        return torch.device("cuda", comm.get_local_rank())
    return device
