"""Faster R-CNN R-50-FPT, 3x schedule: the Mask R-CNN config without the mask branch."""

from .mask_rcnn_R_50_FPT_3x import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
train.output_dir = "output/faster_rcnn_R_50_FPT_3x"
