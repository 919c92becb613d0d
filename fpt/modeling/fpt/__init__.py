"""FPT: Feature Pyramid Transformer (Zhang et al., ECCV 2020), one module per paper concept."""

from .bottom_up_pyramid import BottomUpPyramid
from .build import build_resnet_fpt_backbone
from .config import add_fpt_config
from .grounding_transformer import GroundingTransformer
from .neck import FPT
from .rendering_transformer import RenderingTransformer
from .self_transformer import SelfTransformer

__all__ = [
    "BottomUpPyramid",
    "FPT",
    "GroundingTransformer",
    "RenderingTransformer",
    "SelfTransformer",
    "add_fpt_config",
    "build_resnet_fpt_backbone",
]
