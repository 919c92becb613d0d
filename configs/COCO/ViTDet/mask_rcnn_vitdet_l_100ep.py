"""ViTDet Mask R-CNN, ViT-L, 100 epochs LSJ (paper: 55.6 box AP, 49.2 mask AP)."""

from ...common.models.vit_sizes import set_vit_size
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

set_vit_size("L", model, optimizer, train)
