"""ViTDet Cascade Mask R-CNN, ViT-B, 100 epochs LSJ (paper: 54.0 box AP, 46.7 mask AP)."""

from ...common.models.cascade_mask_rcnn_vitdet import model as _cascade
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = _cascade.roi_heads
