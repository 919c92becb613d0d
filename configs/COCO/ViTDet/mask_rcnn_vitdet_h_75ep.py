"""ViTDet Mask R-CNN, ViT-H, 75 epochs LSJ (paper: 56.7 box AP, 50.1 mask AP)."""

from ...common.models.vit_sizes import set_vit_size
from .mask_rcnn_vitdet_b_100ep import dataloader, lr_multiplier, model, optimizer, train

set_vit_size("H", model, optimizer, train)

# 100 ep -> 75 ep
train.max_iter = train.max_iter * 3 // 4
lr_multiplier.scheduler.milestones = [m * 3 // 4 for m in lr_multiplier.scheduler.milestones]
lr_multiplier.scheduler.num_updates = train.max_iter
