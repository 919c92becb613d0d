"""DETR and DETR-with-iRPE. Importing this package registers ``DETR`` in ``META_ARCH_REGISTRY``."""

from .box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, generalized_box_iou
from .config import add_detr_config
from .criterion import SetCriterion
from .detr import DETR, MLP, detr_lr_factor
from .matcher import HungarianMatcher
from .position_encoding import PositionEmbeddingSine
from .transformer import RPEMultiheadAttention, Transformer

__all__ = [
    "DETR",
    "MLP",
    "HungarianMatcher",
    "PositionEmbeddingSine",
    "RPEMultiheadAttention",
    "SetCriterion",
    "Transformer",
    "add_detr_config",
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "detr_lr_factor",
    "generalized_box_iou",
]
