"""Our models. Importing this package registers our backbones in ``BACKBONE_REGISTRY``."""
