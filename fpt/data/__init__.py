"""Datasets: the synthetic shapes set, COCO-format registration, sample sets, robust loading.

Importing this package registers ``shapes_train`` and ``shapes_val`` (generated lazily).
"""
from .shapes import SHAPES_CLASSES, generate_shapes, register_shapes

register_shapes()

__all__ = ["SHAPES_CLASSES", "generate_shapes", "register_shapes"]
