"""ViTDet Cascade Mask R-CNN, ViT-L, 100 epochs LSJ (paper: 57.6 box AP, 49.8 mask AP)."""

from ...common.models.cascade_mask_rcnn_vitdet import model as _cascade
from .mask_rcnn_vitdet_l_100ep import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = _cascade.roi_heads
