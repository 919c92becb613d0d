"""fpt: Feature Pyramid Transformer and ViTDet for detectron2.

Importing ``fpt`` adapts detectron2 v0.6 to the current stack (:mod:`fpt.compat`) and registers
our backbones in detectron2's ``BACKBONE_REGISTRY``.
"""

from . import compat

compat.apply()

from . import layers, modeling  # noqa: E402  (registers norms and backbones)
from . import data  # noqa: E402,F401  (registers the shapes datasets; generated lazily)

__version__ = "0.1.0"
