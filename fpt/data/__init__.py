"""Datasets: the synthetic shapes set, COCO-format registration, sample sets, robust loading.

Importing this package registers ``shapes_train`` and ``shapes_val`` (generated lazily), their
LVIS-format versions ``shapes_lvis_train`` and ``shapes_lvis_val`` (``fpt.data.lvis``) and the
sample sets ``labelme_voc`` and ``deepforest_trees`` (built by ``datasets/prepare_samples.py``).
"""

from .catalog import (
    DatasetError,
    check_image_files,
    check_registered,
    dataset_classes,
    register_coco,
)
from .detr_mapper import DetrDatasetMapper, DetrResize, RandomSelect
from .images import ImageReadError, read_image
from .mapper import RobustDatasetMapper
from .lvis import register_lvis, register_shapes_lvis
from .samples import register_samples
from .shapes import SHAPES_CLASSES, generate_shapes, register_shapes

register_shapes()
register_shapes_lvis()
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
    "dataset_classes",
    "generate_shapes",
    "register_coco",
    "register_lvis",
    "register_samples",
    "register_shapes",
    "register_shapes_lvis",
    "read_image",
]
