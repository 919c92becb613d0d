"""Our models. Importing this package registers our backbones in ``BACKBONE_REGISTRY`` and DETR
in ``META_ARCH_REGISTRY``."""

from .vit import ViT, get_vit_lr_decay_rate  # noqa: E402
from .simple_pyramid import (  # noqa: E402
    SimpleFeaturePyramid,
    add_vitdet_config,
    build_vitdet_backbone,
)
from .fpt import (  # noqa: E402
    FPT,
    BottomUpPyramid,
    GroundingTransformer,
    RenderingTransformer,
    SelfTransformer,
    add_fpt_config,
    build_resnet_fpt_backbone,
)
from .detr import DETR, add_detr_config, detr_lr_factor  # noqa: E402
from .fed_loss import FedLossFastRCNNOutputLayers  # noqa: E402
