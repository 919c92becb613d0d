"""Faster R-CNN with the FPT neck: ``mask_rcnn_fpt.py`` without the mask branch."""

from .mask_rcnn_fpt import model

model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
