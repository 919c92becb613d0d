"""Datasets: the synthetic shapes set, COCO-format registration, sample sets, robust loading.

Importing this package registers ``shapes_train`` and ``shapes_val`` (generated lazily) and the
sample sets ``labelme_voc`` and ``deepforest_trees`` (built by ``datasets/prepare_samples.py``).
"""

from .catalog import DatasetError, check_image_files, check_registered, register_coco
from .detr_mapper import DetrDatasetMapper, DetrResize, RandomSelect
from .images import ImageReadError, read_image
from .mapper import RobustDatasetMapper
from .samples import register_samples
from .shapes import SHAPES_CLASSES, generate_shapes, register_shapes

register_shapes()
register_samples()

__all__ = [
    "DatasetError",
    "DetrDatasetMapper",
    "DetrResize",
    "ImageReadError",
    "RandomSelect",
    "RobustDatasetMapper",
    "SHAPES_CLASSES",
    "check_image_files",
    "check_registered",
    "generate_shapes",
    "register_coco",
    "register_samples",
    "register_shapes",
    "read_image",
]
