"""Our models. Importing this package registers our backbones in ``BACKBONE_REGISTRY``."""
from .vit import ViT, get_vit_lr_decay_rate  # noqa: E402
from .simple_pyramid import SimpleFeaturePyramid, add_vitdet_config, build_vitdet_backbone  # noqa: E402
