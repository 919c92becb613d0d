"""ViTDet Cascade Mask R-CNN, ViT-H, 75 epochs LSJ (paper: 58.7 box AP, 50.9 mask AP)."""

from ...common.models.cascade_mask_rcnn_vitdet import model as _cascade
from .mask_rcnn_vitdet_h_75ep import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads = _cascade.roi_heads
