"""Optimizer helpers missing from detectron2 0.6."""

from .build import get_default_optimizer_params

__all__ = ["get_default_optimizer_params"]
